"""Training shared by every chapter: seeding, the device rule, ``fit``/``evaluate`` and the history.

``fit`` is the training loop of chapter 2 written once: batches from a ``WorldDataset``, a
progress bar (``tqdm.auto``: a widget in Jupyter, text elsewhere), gradient clipping, evaluation
after each epoch, and a ``History`` that can plot itself.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn


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


@dataclass
class History:
    """What happened during ``fit``: per-epoch loss and accuracies, and the time it took."""

    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    examples_seen: int = 0

    def plot(self, ax=None, label: str | None = None):
        """Loss and accuracy per epoch (two panels, or accuracy only into a given ``ax``)."""
        import matplotlib.pyplot as plt

        epochs = range(1, len(self.loss) + 1)
        if ax is not None:
            ax.plot(epochs, self.val_acc or self.train_acc, marker="o", label=label)
            return ax.figure
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        left.plot(epochs, self.loss, marker="o")
        left.set(xlabel="epoch", ylabel="training loss", title="Loss")
        right.plot(epochs, self.train_acc, marker="o", label="train")
        if self.val_acc:
            right.plot(epochs, self.val_acc, marker="o", label="validation")
        right.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
        right.legend()
        fig.tight_layout()
        return fig


def _check_target(data, target: str) -> None:
    if target not in data.labels:
        raise ValueError(f"the dataset has no label {target!r}; it has {sorted(data.labels)}")


@torch.no_grad()
def evaluate(model: nn.Module, data, target: str, batch_size: int = 512, device=None,
             missing: Iterable[str] = ()) -> float:
    """Accuracy of ``model`` on ``data`` (a WorldDataset) for the label ``target``."""
    _check_target(data, target)
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for batch in data.batches(batch_size, shuffle=False, device=device):
        logits = model(batch, missing=missing) if missing else model(batch)
        correct += (logits.argmax(-1) == batch[target]).sum().item()
    model.train(was_training)
    return correct / len(data)


def fit(model: nn.Module, data, target: str, *, epochs: int = 5, batch_size: int = 128, lr: float = 3e-3,
        weight_decay: float = 1e-4, clip_grad: float | None = 1.0, val_data=None, device=None, seed: int = 0,
        progress: bool = True, desc: str | None = None) -> History:
    """Train ``model`` to predict ``batch[target]`` with cross-entropy and AdamW. Returns a History."""
    _check_target(data, target)
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    if not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if lr <= 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(data) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.15)
    history = History()
    start = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc or "training", disable=not progress, leave=False, mininterval=0.5)
    for epoch in range(epochs):
        total_loss, correct = 0.0, 0
        for batch in data.batches(batch_size, shuffle=True, seed=seed * 1000 + epoch, device=device):
            logits = model(batch)
            loss = nn.functional.cross_entropy(logits, batch[target])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(logits)
            correct += (logits.argmax(-1) == batch[target]).sum().item()
            history.examples_seen += len(logits)
            bar.update()
        history.loss.append(total_loss / len(data))
        history.train_acc.append(correct / len(data))
        if val_data is not None:
            history.val_acc.append(evaluate(model, val_data, target, device=device))
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}", acc=f"{(history.val_acc or history.train_acc)[-1]:.3f}")
    bar.close()
    history.seconds = time.perf_counter() - start
    model.eval()
    return history
