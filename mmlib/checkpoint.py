"""Checkpoints: a model's weights, and optionally its optimiser's state and step, saved to one
file and loaded back safely (``weights_only=True``), with plain metadata beside them.

The training loop (``mmlib.train``) saves and resumes through these; so do the weights cache of
``mmlib.pretrain`` and the weights shipped with mmlib (``mmlib.shipped``).
"""

from __future__ import annotations

from pathlib import Path

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


__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint"]
