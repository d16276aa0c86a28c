"""Checkpoints: a model's weights, and optionally its optimiser's state and step, saved to one
file and loaded back safely (``weights_only=True``), with plain metadata beside them; and the
cache where trained weights are kept between chapters, keyed by what decided them.

The training loop (``mmlib.train``) saves and resumes through these; so do the weights cache of
``mmlib.pretrain`` and the weights shipped with mmlib (``mmlib.shipped``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import textwrap
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

FORMAT = "mmlib-2"
"""The checkpoint format written by ``save_checkpoint`` (checked by ``load_checkpoint``)."""


def save_checkpoint(model: nn.Module, path: str | Path, *, optimizer: torch.optim.Optimizer | None = None,
                    step: int | None = None, **metadata) -> Path:
    """Save the model's weights, optionally the optimiser's state and the step, and plain metadata
    (numbers, strings, lists) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "state_dict": model.state_dict(), "step": step,
            "optimizer": optimizer.state_dict() if optimizer is not None else None, "metadata": metadata}
    tmp = path.with_name(path.name + ".partial")
    torch.save(blob, tmp)
    tmp.replace(path)  # a run killed while saving never leaves a broken checkpoint behind
    return path


def load_checkpoint(model: nn.Module, path: str | Path, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load weights saved by ``save_checkpoint`` into ``model`` (and the optimiser's state into
    ``optimizer``), safely: ``weights_only=True``. Returns the metadata, with the ``step``.
    A missing, corrupted or mismatched file raises a ValueError."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by mmlib.checkpoint.save_checkpoint")
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"the checkpoint {path} does not fit this model: {err}") from None
    if optimizer is not None:
        if blob["optimizer"] is None:
            raise ValueError(f"the checkpoint {path} holds no optimiser state to resume from")
        optimizer.load_state_dict(blob["optimizer"])
    return {**blob["metadata"], "step": blob["step"]}


def cache_dir() -> Path:
    """Where trained weights are kept: ``$MMLIB_CACHE``, else ``$XDG_CACHE_HOME/mmlib``, else
    ``~/.cache/mmlib``. Deleting the folder is always safe (the weights are trained again)."""
    if os.environ.get("MMLIB_CACHE"):
        return Path(os.environ["MMLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmlib"


def _code(source: str) -> str:
    """What source code computes: its syntax tree without docstrings (comments are never in it)."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_fingerprint(parts: Iterable) -> str:
    """A hash of the code of ``parts`` and of torch's version: each part a module's name (such as
    'mmlib.train'; a package counts with all its files) or a function or class (its own source).
    It changes when what they compute changes, not when a docstring or a comment does."""
    import torch

    digest = hashlib.sha256(torch.__version__.encode())
    for part in parts:
        if not isinstance(part, str):
            digest.update(_code(inspect.getsource(part)).encode())
            continue
        spec = importlib.util.find_spec(part)
        if spec is None or spec.origin is None:
            raise ValueError(f"no module {part!r} to fingerprint")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for path in files:
            digest.update(_code(path.read_text(encoding="utf-8")).encode())
    return digest.hexdigest()


def cached_path(kind: str, recipe: dict, code: Iterable) -> Path:
    """Where the weights of a ``kind`` of model trained by ``recipe`` (a dict) with ``code`` (the
    parts of ``code_fingerprint``) are cached: a file name that changes with either."""
    key = hashlib.sha256((json.dumps(recipe, sort_keys=True) + code_fingerprint(code)).encode())
    return cache_dir() / f"{kind}-{key.hexdigest()[:16]}.pt"


__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "cache_dir", "code_fingerprint", "cached_path"]
