"""The book's one training loop, ``fit_steps``, and what every training shares: seeding, the
device rule, how the optimiser steps (``Optimisation``: schedule, weight decay, clipping,
per-module learning rates), the ``History`` (chapter 2 onwards). Which weights learn at all is
``mmlib.freezing``'s.

``fit_steps`` serves every chapter: classification (``fit``), pretraining (``mmlib.pretrain``),
transfer (``mmlib.transfer.adapt``), every recipe of ``mmlib.recipes`` and the command line on
one process or many. Its contract:

- **Models own their loss.** ``model.loss(batch)`` returns a dict of named terms; the loop
  minimises ``'loss'`` and logs the others (an accuracy, the parts of a composite loss). A model
  without a ``loss`` method (a classifier) is trained with ``loss=`` a function of the batch
  (``fit`` passes cross-entropy on its target). A model may also define ``after_step()`` (the
  dual encoder clamps its temperature there); ``hooks`` run after it (e.g. ``EMA``).
- **The budget is counted in steps**, and everything that changes during training is a function
  of the step: the learning rate (``learning_rate``: linear warm-up, then cosine decay to 0) and
  the batch (``WorldDataset.stream``). A run stopped and resumed from its checkpoint therefore
  continues exactly as an uninterrupted one (tested).
- **AdamW with two parameter groups** (``parameter_groups``): weight decay on matrices and
  kernels only, never on biases, normalisation gains, the logit scale or the SigLIP bias (as
  minGPT, nanoGPT and OpenCLIP do); per-module learning-rate multipliers, 0 = frozen.
- **Data-parallel when started by torchrun** (chapter 6): the model is wrapped in
  ``DistributedDataParallel``, each process takes its slice of every global batch, and rank 0
  alone draws the progress bar and writes checkpoints (``Checkpointing``, ``mmlib.checkpoint``).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mmlib import distributed
from mmlib.checkpoint import load_checkpoint, save_checkpoint


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


# ---------------------------------------------------------------------------------------------
# Schedule and optimiser
# ---------------------------------------------------------------------------------------------

def learning_rate(step: int, steps: int, peak: float, warmup: float = 0.1) -> float:
    """The learning rate at ``step`` (0-based) of ``steps``: a linear warm-up to ``peak`` over the
    first ``warmup`` fraction of the steps, then a cosine decay towards zero. A function of the
    step alone, so a resumed run continues on the same curve."""
    warm = max(1, round(warmup * steps))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


class FrozenDict(dict):
    """A dict that cannot change once made, for the mappings inside frozen settings (a recipe's
    per-module learning rates, a connector's options): a recipe shared by several chapters cannot
    be altered by one of them. Hashable; copies and pickles as a dict of the same items."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a recipe's settings cannot change: make a new one with dataclasses.replace")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _refuse

    def __hash__(self):
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return type(self), (dict(self),)


@dataclass(frozen=True)
class Optimisation:
    """How the optimiser steps (AdamW): the peak learning rate ``lr`` of the ``learning_rate``
    schedule and its ``warmup`` fraction, ``weight_decay`` on matrices and kernels, gradient-norm
    clipping at ``clip_grad`` (None: none) and per-submodule multipliers of the learning rate,
    ``lr_scale`` ({'connector': 3.0}; 0 freezes; see ``parameter_groups``)."""

    lr: float = 3e-3
    warmup: float = 0.1
    weight_decay: float = 1e-4
    clip_grad: float | None = 1.0
    lr_scale: Mapping[str, float] | None = None

    def __post_init__(self):
        if self.lr_scale is not None:  # its own copy, which nobody can change
            object.__setattr__(self, "lr_scale", FrozenDict(self.lr_scale))
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.weight_decay < 0 or (self.clip_grad is not None and not self.clip_grad > 0):
            raise ValueError(f"need weight_decay >= 0 and clip_grad > 0 (or None), got "
                             f"{self.weight_decay} and {self.clip_grad}")


def parameter_groups(model: nn.Module, weight_decay: float = 1e-4,
                     lr_scale: Mapping[str, float] | None = None) -> list[dict]:
    """AdamW parameter groups for ``model``'s trainable parameters.

    Weight decay pulls weights towards zero; it suits matrices and convolution kernels, not biases,
    normalisation gains or scalars such as the logit scale (decaying those changes what the model
    computes, not how complex it is), so only parameters with two or more dimensions decay.
    ``lr_scale`` multiplies the learning rate of submodules, by name: ``{'image_encoder': 0.1}``;
    the longest matching name wins, and 0 freezes the submodule (its parameters stop learning).
    """
    lr_scale = dict(lr_scale or {})
    names = {name for name, _ in model.named_modules() if name}
    unknown = [name for name in lr_scale if name not in names]
    if unknown:
        raise ValueError(f"lr_scale names {unknown}, which are not submodules of the model "
                         f"(it has e.g. {sorted(n for n in names if '.' not in n)})")
    if any(not isinstance(v, (int, float)) or v < 0 for v in lr_scale.values()):
        raise ValueError(f"learning-rate multipliers must be numbers >= 0, got {lr_scale}")
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        owner = max((m for m in lr_scale if name.startswith(m + ".")), key=len, default=None)
        scale = 1.0 if owner is None else float(lr_scale[owner])
        if scale == 0:
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        groups.setdefault((scale, p.dim() >= 2), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters: is everything frozen?")
    return [{"params": params, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0}
            for (scale, decay), params in groups.items()]


# ---------------------------------------------------------------------------------------------
# History and hooks
# ---------------------------------------------------------------------------------------------

@dataclass
class History:
    """What happened during training: each step's loss and other named terms, evaluations made
    along the way (examples seen -> value), the time it took."""

    loss: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    evals: list[tuple[int, Any]] = field(default_factory=list)
    steps_per_epoch: int = 1
    seconds: float = 0.0
    examples_seen: int = 0

    def per_epoch(self, name: str = "loss") -> list[float]:
        """The mean of a logged term over each epoch ('loss', or e.g. 'accuracy')."""
        values = self.loss if name == "loss" else self.terms.get(name)
        if values is None:
            raise ValueError(f"nothing called {name!r} was logged; there is 'loss' and {sorted(self.terms)}")
        n = self.steps_per_epoch
        return [sum(values[i:i + n]) / len(values[i:i + n]) for i in range(0, len(values), n)]

    @property
    def train_acc(self) -> list[float]:
        """Training accuracy per epoch (classifiers trained with ``fit``)."""
        return self.per_epoch("accuracy")

    @property
    def val_acc(self) -> list[float]:
        """The values of the evaluations, in order (``fit``: validation accuracy per epoch)."""
        return [value for _, value in self.evals]

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / max(self.seconds, 1e-9)

    def plot(self, ax=None, label: str | None = None):
        """Evaluations against examples seen into ``ax``; or, alone, loss and evaluations."""
        if ax is not None:
            ax.plot(*zip(*self.evals), marker="o", label=label)
            return ax.figure
        import matplotlib.pyplot as plt  # on use: the command line and its workers never draw

        fig, (left, right) = plt.subplots(1, 2, figsize=(6.9, 3.0), layout="constrained")
        left.plot(self.loss, lw=1)
        left.set(xlabel="step", ylabel="training loss", title="Loss")
        if self.evals:
            right.plot(*zip(*self.evals), marker="o")
        right.set(xlabel="examples seen", ylabel="evaluation", title="Evaluation")
        return fig


class EMA:
    """An exponential moving average of a model's weights, kept in a copy that is never trained:
    ``average <- decay * average + (1 - decay) * weights`` after every step. Pass it as a hook,
    ``fit_steps(..., hooks=[ema])``, then evaluate or sample with ``ema.model`` (chapter 8)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"the decay is a number in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, model: nn.Module, step: int) -> None:
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current, 1 - self.decay)
            else:  # counters such as BatchNorm's num_batches_tracked
                average.copy_(current)


@dataclass(frozen=True)
class Checkpointing:
    """Where and when the loop saves (rank 0 only): model, optimiser, step and history at ``path``
    every ``every`` steps and at the end; ``resume=True`` continues from that file exactly;
    ``stop_at`` ends the run after that step (and saves), as a time-limited job would."""

    path: str | Path
    every: int = 0
    resume: bool = False
    stop_at: int | None = None


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

class _Objective(nn.Module):
    """The model and its loss as one module whose forward returns the loss terms: what
    ``DistributedDataParallel`` wraps, so that every parameter the loss reads (the logit scale
    too) takes part in the gradient exchange."""

    def __init__(self, model: nn.Module, loss: Callable[[dict], dict] | None):
        super().__init__()
        self.model, self._loss = model, loss

    def forward(self, batch: dict) -> dict:
        terms = self._loss(batch) if self._loss is not None else self.model.loss(batch)
        if not isinstance(terms, Mapping) or "loss" not in terms:
            raise ValueError(f"the loss must be a dict of named terms with a 'loss' entry to minimise, got "
                             f"{type(terms).__name__}{' with ' + str(sorted(terms)) if isinstance(terms, Mapping) else ''}")
        return terms


def fit_steps(model: nn.Module, data, *, steps: int, batch_size: int, optim: Optimisation = Optimisation(),
              loss: Callable[[dict], dict] | None = None, drop_last: bool = True, seed: int = 0, device=None,
              evaluate: Callable[[nn.Module], Any] | None = None, eval_every: int = 0,
              hooks: Iterable[Callable[[nn.Module, int], None]] = (), checkpoint: Checkpointing | None = None,
              progress: bool = True, desc: str = "training") -> History:
    """Train ``model`` for ``steps`` optimiser steps on batches of ``data`` (a ``WorldDataset``).

    optim:      how the optimiser steps (``Optimisation``: lr and its schedule, weight decay,
                clipping, per-submodule learning rates).
    loss:       a function batch -> dict of terms, for models without their own ``loss`` method.
    drop_last:  skip each epoch's last, smaller batch (contrastive losses want full batches).
    evaluate:   ``evaluate(model)`` (in evaluation mode, without gradients) every ``eval_every``
                steps and after the last one; the results go to ``History.evals``.
    hooks:      ``hook(model, step)`` after every optimiser step (e.g. an ``EMA``).
    checkpoint: where and when to save, and whether to resume (``Checkpointing``).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(optim, Optimisation):
        raise ValueError(f"optim is an Optimisation (e.g. Optimisation(lr=1e-3)), got {type(optim).__name__}")
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    if loss is None and not callable(getattr(model, "loss", None)):
        raise ValueError(f"a {type(model).__name__} has no loss(batch) method: pass loss=, a function of "
                         "the batch returning {'loss': ...} (fit does this for classifiers)")
    resume = checkpoint is not None and checkpoint.resume
    if resume and not Path(checkpoint.path).exists():
        raise ValueError(f"resume=True needs an existing checkpoint, but {checkpoint.path!r} does not exist")
    rank, world_size = distributed.rank(), distributed.world_size()
    per_epoch = data.steps_per_epoch(batch_size, drop_last)
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(parameter_groups(model, optim.weight_decay, optim.lr_scale), lr=optim.lr)
    history, start = History(steps_per_epoch=per_epoch), 0
    if resume:
        state = load_checkpoint(model, checkpoint.path, optimizer)
        start, saved = state["step"], state["history"]
        history = History(**{**saved, "evals": [tuple(e) for e in saved["evals"]]})
        torch.set_rng_state(state["rng"])
    objective = _Objective(model, loss)
    if world_size > 1:  # unused parameters (a CNN's token positions) must not stall the exchange
        objective = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
    stop = steps if checkpoint is None or checkpoint.stop_at is None else min(checkpoint.stop_at, steps)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    batches = data.stream(batch_size, seed=seed, start=start, drop_last=drop_last, rank=rank,
                          world_size=world_size, device=device)
    bar = tqdm(total=stop, initial=start, desc=desc, disable=not progress or rank != 0, leave=False,
               mininterval=0.5)
    began = time.perf_counter()
    for step in range(start, stop):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, optim.lr, optim.warmup) * group["lr_scale"]
        batch = next(batches)
        terms = objective(batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if optim.clip_grad:
            nn.utils.clip_grad_norm_(trainable, optim.clip_grad)
        optimizer.step()
        if hasattr(model, "after_step"):
            model.after_step()
        for hook in hooks:
            hook(model, step)
        history.loss.append(terms["loss"].item())
        for name, value in terms.items():
            if name != "loss":
                history.terms.setdefault(name, []).append(float(value))
        history.examples_seen += len(next(iter(batch.values()))) * world_size
        done = step + 1
        bar.update()
        if evaluate is not None and (done == steps or (eval_every and done % eval_every == 0)):
            history.evals.append((history.examples_seen, _evaluate(model, evaluate)))
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}", eval=_short(history.evals[-1][1]))
        if rank == 0 and checkpoint is not None and (done == stop or (checkpoint.every and done % checkpoint.every == 0)):
            history.seconds += time.perf_counter() - began
            began = time.perf_counter()
            save_checkpoint(model, checkpoint.path, optimizer=optimizer, step=done, history=asdict(history),
                            rng=torch.get_rng_state(), world_size=world_size)
    bar.close()
    history.seconds += time.perf_counter() - began
    model.eval()
    return history


def _evaluate(model: nn.Module, evaluate: Callable[[nn.Module], Any]) -> Any:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        value = evaluate(model)
    model.train(was_training)
    return value


def _short(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)[:20]


# ---------------------------------------------------------------------------------------------
# Classification: fit and evaluate
# ---------------------------------------------------------------------------------------------

def _check_target(data, target: str) -> None:
    if target not in data.labels:
        raise ValueError(f"the dataset has no label {target!r}; it has {sorted(data.labels)}")


def classification_terms(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy (to minimise) and accuracy (to watch) of class scores (B, C) against labels (B,)."""
    return {"loss": nn.functional.cross_entropy(logits, labels),
            "accuracy": (logits.argmax(-1) == labels).float().mean().detach()}


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


def fit(model: nn.Module, data, target: str, *, epochs: int = 5, steps: int | None = None, batch_size: int = 128,
        lr: float = 3e-3, val_data=None, **options) -> History:
    """Train a classifier (``model(batch)`` -> class scores) to predict ``batch[target]`` with
    cross-entropy: ``epochs`` passes over ``data`` (or exactly ``steps`` steps) at peak learning
    rate ``lr`` (the rest of ``Optimisation`` as its defaults), the last batch of an epoch kept.
    With ``val_data``, the validation accuracy is measured after every epoch
    (``History.val_acc``). ``options`` go to ``fit_steps`` (device, seed, desc, ...)."""
    _check_target(data, target)
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    if not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    per_epoch = data.steps_per_epoch(batch_size)
    validate = None if val_data is None else (lambda m: evaluate(m, val_data, target))
    return fit_steps(model, data, steps=steps or epochs * per_epoch, batch_size=batch_size, optim=Optimisation(lr=lr),
                     drop_last=False, loss=lambda batch: classification_terms(model(batch), batch[target]),
                     evaluate=validate, eval_every=per_epoch, **options)


__all__ = ["seed_everything", "default_device", "learning_rate", "FrozenDict", "Optimisation", "parameter_groups", "History", "EMA",
           "Checkpointing", "fit_steps",
           "classification_terms", "evaluate", "fit"]
