"""The shape of mmlib: dependencies point one way (a module imports only lower layers), and there
is one training loop."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmlib"

LAYERS = [
    {"spectrogram", "algorithms", "objectives", "alignment", "metrics", "distributed", "lm", "checkpoint",
     "freezing"},  # plain torch
    {"world", "plot"},
    {"text", "timeline"},
    {"data", "encoders"},
    {"fusion", "train"},
    {"recipes", "shipped", "notebook"},  # every recipe, written once
    {"models"},
    {"zeroshot", "transfer"},
    {"pretrain"},
    {"vlm", "generate"},  # neither needs the other
    {"readers"},  # chapter 8 reads its drawings with chapter 4's CLIP and chapter 7b's describer
    {"claims"},  # each ranked claim: its recipes and its measurement
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
            found.update(alias.name for alias in node.names if not alias.name.startswith("__"))
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mmlib."))
    return found


def root_imports_at_module_level(path: Path) -> list[str]:
    """Module-level imports of the package root itself (``import mmlib``, ``from mmlib import
    __version__``): the root sits above every module, so none may load it on import."""
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "mmlib"]
        elif isinstance(node, ast.ImportFrom) and node.module == "mmlib":
            found += [f"from mmlib import {a.name}" for a in node.names if a.name.startswith("__")]
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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_the_package_root_on_import(path):
    assert not root_imports_at_module_level(path), f"{path.name}: {root_imports_at_module_level(path)}"


def test_the_layering_test_sees_a_bare_root_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import mmlib\nfrom mmlib import __version__\n\ndef f():\n    import mmlib\n")
    assert root_imports_at_module_level(bad) == ["mmlib", "from mmlib import __version__"]


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_its_concept_and_stays_readable(path):
    """One concept per module: its docstring's first line names it, and it fits in ~400 lines."""
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.splitlines()[0]) > 20, f"{path.name}: start with a docstring naming its concept"
    assert len(path.read_text().splitlines()) <= 420, f"{path.name}: split it by concept"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_all_lists_what_the_module_defines(path):
    """``__all__`` names only what exists, and every public function and class."""
    tree = ast.parse(path.read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assigned |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    listed = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and any(getattr(t, "id", "") == "__all__" for t in n.targets)), None)
    assert listed is not None, f"{path.name}: say what is public with __all__"
    assert set(listed) <= defined | assigned, f"{path.name}: __all__ names {set(listed) - defined - assigned}"
    public = {name for name in defined if not name.startswith("_")}
    assert public <= set(listed), f"{path.name}: add {sorted(public - set(listed))} to __all__"
