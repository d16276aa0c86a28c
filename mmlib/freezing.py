"""Which weights learn: ``freeze`` a module's parameters, ``lock`` a tower (frozen, and its
batch-norm statistics fixed, as locked-image tuning does), ``count_trainable`` what is left.
Chapters 3, 5 and 7 lock a pretrained tower; ``mmlib.train.parameter_groups`` also freezes a
submodule whose learning-rate multiplier is 0.
"""

from __future__ import annotations

import types

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` (returns it, for chaining)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Let every parameter of ``module`` learn again (returns it)."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def lock(module: nn.Module) -> nn.Module:
    """Freeze ``module`` *and* keep it in evaluation mode, even when a parent calls ``.train()``:
    a locked tower (LiT) neither learns nor updates its BatchNorm statistics. ``unlock`` undoes it."""
    freeze(module).eval()
    module.train = types.MethodType(lambda self, mode=True: self, module)
    return module


def unlock(module: nn.Module) -> nn.Module:
    """Undo ``lock``: trainable again, and ``.train()`` works as usual."""
    module.__dict__.pop("train", None)
    return unfreeze(module)


def count_trainable(module: nn.Module) -> int:
    """Number of parameters (scalars) that will receive gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["freeze", "unfreeze", "lock", "unlock", "count_trainable"]
