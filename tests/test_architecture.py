"""The shape of mmlib: dependencies point one way (a module imports only lower layers), and there
is one training loop."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmlib"

LAYERS = [
    {"spectrogram", "algorithms", "objectives", "metrics", "distributed", "lm", "checkpoint"},  # plain torch
    {"world", "plot"},
    {"text", "history"},
    {"data", "encoders"},
    {"fusion", "train"},
    {"models", "shipped"},
    {"pretrain", "transfer"},
    {"vlm"},
    {"generate"},  # chapter 8 reads its drawings with chapter 4's CLIP and chapter 7b's describer
    {"notebook"},
]
"""Lowest first. A module may import modules of lower layers only (and its own package's parts)."""

LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def concept(path: Path) -> str:
    """mmlib/world/scenes.py -> 'world'; mmlib/train.py -> 'train'."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def mmlib_imports(path: Path) -> set[str]:
    """The mmlib modules a file imports, anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmlib."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "mmlib":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mmlib."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_a_layer():
    assert {concept(p) for p in MODULES} == set(LAYER), "add new modules to LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path):
    me = concept(path)
    for other in mmlib_imports(path) - {me}:
        assert other in LAYER, f"{path.name} imports unknown mmlib.{other}"
        assert LAYER[other] < LAYER[me], (f"mmlib.{me} (layer {LAYER[me]}) imports mmlib.{other} (layer "
                                          f"{LAYER[other]}): dependencies must point to lower layers")


def test_the_package_root_imports_nothing_eagerly():
    """`import mmlib.world` must not load torch's training machinery or matplotlib's pyplot."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not top_level, "mmlib/__init__.py should import lazily (inside functions)"


def test_one_training_loop():
    """Only mmlib.train steps an optimiser (the linear probe's L-BFGS solves a convex problem)."""
    steppers = [p.name for p in PACKAGE.rglob("*.py")
                if re.search(r"\boptimi[sz]er\.step\(\)", p.read_text())]
    assert steppers == ["train.py"], steppers
