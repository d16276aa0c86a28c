"""Training utilities shared by every chapter: one seed function and one device rule."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so a rerun prints the same numbers.

    Used by the setup cell of every chapter. Returns the seed.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return seed


def default_device() -> torch.device:
    """The device the book trains on: CUDA when present (Colab), else the CPU. No code changes."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
