"""Weights shipped with mmlib: models whose recipe takes longer than a chapter's budget.

Most of the book's models train in front of the reader. A few do not fit a chapter's minute
beside the rest of its work, so a benchmark script trains each once and its weights ship in
``mmlib/weights/``, next to the recipe that made them, the seconds it took and the versions used:

- ``generator.pt`` and ``generator-clip.pt``: chapter 8's text-to-image generator
  (``mmlib.generate.pretrained_generator``; ``benchmarks/train_generator.py``);
- ``vqa.pt`` and ``vqa-lm.pt``: chapter 7's model and its language model before tuning;
  ``describer.pt`` and ``describer-lm.pt``: chapter 7b's describer and its language model
  (``mmlib.vlm.pretrained_vision_language_model``, ``pretrained_language_model``;
  ``benchmarks/train_vlm.py``);
- ``judge.pt``: chapter 8's judge of generated images
  (``mmlib.generate.pretrained_judge``; ``benchmarks/train_judge.py``).

Their recipes are values of ``mmlib.recipes``.

``load`` refuses a missing file, weights of another recipe, and weights that no longer fit the
model's code, each with the command that trains them again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mmlib.checkpoint import load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parent / "weights"
"""The folder of shipped weights (package data of mmlib)."""


def path_of(name: str) -> Path:
    """The shipped weights file ``name`` ('generator', 'describer', ...)."""
    if not name or "/" in name or name.endswith(".pt"):
        raise ValueError(f"a shipped model's name is a plain word such as 'describer', got {name!r}")
    return WEIGHTS / f"{name}.pt"


def json_safe(value):
    """A recipe (``dataclasses.asdict``) as plain JSON values, as checkpoints store it: tuples
    become lists, at every depth."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [json_safe(v) for v in value]
    return value


def _existing(path: str | Path, retrain: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no shipped weights at {path}: train them again with: {retrain}")
    return path


def load(model: nn.Module, path: str | Path, recipe: dict, retrain: str) -> nn.Module:
    """Load the weights at ``path`` into ``model`` if they were trained by ``recipe``; otherwise
    raise a ValueError naming the command ``retrain`` that trains them again."""
    path = _existing(path, retrain)
    try:
        stored = load_checkpoint(model, path).get("recipe")
    except ValueError as err:
        raise ValueError(f"{err}: train them again with: {retrain}") from None
    wanted = json_safe(recipe)
    if stored != wanted:
        raise ValueError(f"{path} was trained by the recipe {stored}, not {wanted}: train them again with: {retrain}")
    return model


def record(path: str | Path, retrain: str) -> dict:
    """What shipped weights say about their training: 'recipe', 'seconds', 'torch', 'cpus'."""
    return dict(torch.load(_existing(path, retrain), map_location="cpu", weights_only=True)["metadata"])


def save(model: nn.Module, path: str | Path, recipe: dict, seconds: float) -> Path:
    """Ship ``model``'s weights with their recipe, training time and versions."""
    return save_checkpoint(model, path, recipe=json_safe(recipe), seconds=round(seconds, 1),
                           torch=str(torch.__version__), cpus=torch.get_num_threads())


__all__ = ["WEIGHTS", "path_of", "json_safe", "load", "record", "save"]
