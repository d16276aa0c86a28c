"""Transfer learning (source article §2.4; chapter 5): one pretrained tower, new domains, and the
ways to adapt it.

A ``Classifier`` is an encoder plus a linear head. ``adapt`` trains one with a named strategy:

- ``'linear_probe'``: the encoder frozen, logistic regression on its features (L-BFGS);
- ``'fine_tune'``:    every weight trained, starting from the pretrained encoder and a fresh head;
- ``'lp_ft'``:        linear probe first, then fine-tune everything starting from the fitted head
  (Kumar et al. 2022): the head no longer sends large random gradients into good features;
- ``'scratch'``:      the same architecture, re-initialised, trained on the few labels alone.

Batch normalisation and tiny batches: with k = 1 label per class a batch holds a handful of images.
``frozen_statistics=True`` keeps the encoder's BatchNorm layers in evaluation mode (their pretrained
means and variances are used; their scale and shift still learn). The linear probe and LP-FT keep
them, since both mean to preserve the pretrained features; full fine-tuning and scratch use batch
statistics, which let the network follow a new domain (chapter 5 measures both choices).

``SoundAsImage`` lets an image tower hear: a waveform becomes its log-mel spectrogram, drawn as a
32 x 32 image, the way audio models start from ImageNet-pretrained vision networks.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tqdm.auto import tqdm

from mmlib import world
from mmlib.data import few_shot_indices, make_dataset
from mmlib.encoders import Encoder, Features
from mmlib.metrics import linear_probe
from mmlib.recipes import TransferRecipe
from mmlib.spectrogram import SAMPLE_RATE, log_mel_spectrogram
from mmlib.freezing import freeze
from mmlib.train import default_device, evaluate, fit

STRATEGIES = ("linear_probe", "fine_tune", "lp_ft", "scratch")


# ---------------------------------------------------------------------------------------------
# Starting again
# ---------------------------------------------------------------------------------------------

def reinitialise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Forget what ``module`` learned: every layer draws fresh initial weights (seeded), BatchNorm
    statistics restart, and parameters a module creates itself (positional embeddings) restart at
    zero, as mmlib's encoders initialise them. In place; returns the module."""
    torch.manual_seed(seed)
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        elif hasattr(sub, "reset_running_stats"):
            sub.reset_running_stats()
        elif not isinstance(sub, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            with torch.no_grad():
                for p in sub.parameters(recurse=False):
                    p.zero_()
    return module


# ---------------------------------------------------------------------------------------------
# An encoder with a head
# ---------------------------------------------------------------------------------------------

class Classifier(nn.Module):
    """``encoder`` (pooled features) -> linear head -> logits. Called on a batch dict (reads
    ``batch[key]``) or directly on a tensor, so ``mmlib.train.fit`` and ``evaluate`` can train it.

    frozen_statistics: keep every BatchNorm layer of the encoder in evaluation mode, also while
    training (see the module docstring).
    """

    def __init__(self, encoder: Encoder, n_classes: int, key: str = "image", frozen_statistics: bool = False):
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes!r}")
        self.encoder, self.key, self.frozen_statistics = encoder, key, frozen_statistics
        self.head = nn.Linear(encoder.dim, n_classes)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.frozen_statistics:
            for m in self.encoder.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, batch) -> torch.Tensor:
        x = batch[self.key] if isinstance(batch, dict) else batch
        return self.head(self.encoder(x))


@torch.no_grad()
def extract_features(encoder: nn.Module, data, key: str = "image", batch_size: int = 512, device=None) -> torch.Tensor:
    """Pooled features (N, dim) of every example of ``data`` (a WorldDataset), in evaluation mode."""
    if len(data) == 0:
        raise ValueError("cannot extract features from an empty dataset")
    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out = torch.cat([encoder(b[key]) for b in data.batches(batch_size, shuffle=False, device=device)])
    encoder.train(was_training)
    return out


def adapt(encoder: Encoder, data, target: str, n_classes: int,
          strategy: str, *, key: str = "image", steps: int = 60,
          batch_size: int = 32, lr: float = 1e-3, l2: float = 1e-3,
          seed: int = 0, frozen_statistics: bool | None = None,
          device=None, progress: bool = False) -> Classifier:
    """Train a ``Classifier`` on ``data[target]`` with one of
    ``STRATEGIES``, from a copy of ``encoder`` (never modified).
    Gradient strategies take exactly ``steps`` optimiser steps through
    the one loop, whatever the dataset size: every k gets equal compute.
    ``frozen_statistics``: batch norm uses its pretrained running
    statistics (True) or each batch's (False); default: the pretrained
    ones for every strategy but ``scratch``, which has none."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: "
                         f"expected one of {STRATEGIES}")
    if target not in data.labels:
        raise ValueError(f"the dataset has no label {target!r}; "
                         f"it has {sorted(data.labels)}")
    if len(data) == 0:
        raise ValueError("cannot adapt on an empty dataset")
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    device = default_device() if device is None else torch.device(device)
    torch.manual_seed(seed)
    encoder = copy.deepcopy(encoder).to(device)
    if strategy == "scratch":
        reinitialise(encoder, seed)
    if frozen_statistics is None:  # one policy for every pretrained start
        frozen_statistics = strategy != "scratch"
    model = Classifier(encoder, n_classes, key,
                       frozen_statistics=frozen_statistics).to(device)
    labels = data.labels[target].to(device)
    if strategy in ("linear_probe", "lp_ft"):
        features = extract_features(encoder, data, key, device=device)
        probe = linear_probe(features, labels, n_classes, l2=l2)
        model.head.load_state_dict(probe.state_dict())
    if strategy == "linear_probe":
        freeze(model.encoder)
        return model.eval()
    fit(model, data, target, steps=steps, batch_size=batch_size, lr=lr,
        device=device, seed=seed, progress=progress, desc=strategy)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Crossing a modality gap
# ---------------------------------------------------------------------------------------------

class SoundAsImage(Encoder):
    """An image encoder applied to sound: waveform (B, samples) -> log-mel spectrogram scaled to
    [0, 1] per clip (B, mels, frames), repeated into 3 channels -> ``image_encoder``.

    With the world's half-second clips and 32 mel bands, the spectrogram is 32 x 32: time runs left
    to right, pitch bottom to top."""

    modality = "audio"

    def __init__(self, image_encoder: Encoder, n_mels: int = 32, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.image_encoder, self.n_mels, self.sample_rate = image_encoder, n_mels, sample_rate
        self.dim = image_encoder.dim

    def to_image(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, samples) waveforms -> (B, 3, mels, frames) images in [0, 1], low pitches at the bottom."""
        if not isinstance(waves, torch.Tensor) or waves.dim() != 2 or not waves.is_floating_point():
            raise ValueError(f"expected waveforms of shape (B, samples) as floats, got "
                             f"{tuple(waves.shape) if isinstance(waves, torch.Tensor) else type(waves).__name__}")
        spec = log_mel_spectrogram(waves, self.sample_rate, n_mels=self.n_mels).flip(1)  # (B, mels, frames)
        low = spec.amin((1, 2), keepdim=True)
        high = spec.amax((1, 2), keepdim=True)
        spec = (spec - low) / (high - low).clamp_min(1e-6)
        return spec[:, None].expand(-1, 3, -1, -1)

    def encode(self, x: torch.Tensor) -> Features:
        return self.image_encoder.encode(self.to_image(x))


def zero_shot_equivalent_shots(zero_shot: float, probe: dict[int, float]) -> float:
    """How many labels per class a linear probe needs to match ``zero_shot`` accuracy (CLIP Fig. 6):
    interpolated in log k between the two measured budgets around it; 0 if even the smallest budget
    beats zero-shot, and the largest k if none reaches it."""
    ks = sorted(probe)
    if not ks:
        raise ValueError("need probe accuracies for at least one k")
    if zero_shot <= probe[ks[0]]:
        return 0.0 if zero_shot < probe[ks[0]] else float(ks[0])
    for lo, hi in zip(ks, ks[1:]):
        if probe[lo] < zero_shot <= probe[hi]:
            t = (zero_shot - probe[lo]) / (probe[hi] - probe[lo])
            return float(torch.tensor(lo).log().lerp(torch.tensor(hi).log(), t).exp())
    return float(ks[-1])


def compare_strategies(encoder: Encoder, pool, test, target: str, n_classes: int,
                       ks: tuple[int, ...], strategies: tuple[str, ...] = STRATEGIES, *,
                       key: str = "image", seed: int = 0, device=None, progress: bool = True,
                       **options) -> tuple[dict[str, dict[int, float]], dict[str, Classifier]]:
    """Adapt ``encoder`` with every strategy at every label budget k (examples per class, drawn from
    ``pool`` with ``few_shot_indices``) and measure accuracy on ``test``.

    Returns ``(table, models)``: ``table[strategy][k]`` is the test accuracy, and ``models`` holds
    each strategy's classifier trained at the largest k (for further evaluation). ``options`` go
    to ``adapt`` (steps, lr, batch_size, ...)."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}: expected some of {STRATEGIES}")
    if not ks or any(not isinstance(k, int) or k <= 0 for k in ks):
        raise ValueError(f"ks must be positive integers (labels per class), got {ks!r}")
    table: dict[str, dict[int, float]] = {s: {} for s in strategies}
    models: dict[str, Classifier] = {}
    bar = tqdm(total=len(ks) * len(strategies), desc="strategies x k", disable=not progress, leave=False)
    for k in sorted(ks):
        few = pool.subset(few_shot_indices(pool.labels[target], k, seed=seed))
        for strategy in strategies:
            model = adapt(encoder, few, target, n_classes, strategy, key=key, seed=seed, device=device, **options)
            table[strategy][k] = round(evaluate(model, test, target), 3)
            if k == max(ks):
                models[strategy] = model
            bar.update()
    bar.close()
    return table, models


# ---------------------------------------------------------------------------------------------
# Chapter 5's comparisons, by their recipe
# ---------------------------------------------------------------------------------------------

def domain_test(recipe: TransferRecipe, domain: str = "clean", sound: bool = False):
    """The fixed test set of a domain (``world.DOMAINS``), or of sounds: ``recipe.test``
    single objects, the same for every seed."""
    if sound:
        return make_dataset("attributes", recipe.test, split="test", seed=8, sound=True)
    return make_dataset("attributes", recipe.test, split="test", seed=7, domain=domain)


def domain_pool(recipe: TransferRecipe, domain: str = "sketch", sound: bool = False):
    """The labelled pool of a domain, or of sounds: ``recipe.per_class`` single objects per
    shape, drawn from the recipe's seed; the few labels of each k come from it."""
    n, s = recipe.per_class * len(world.SHAPES), 10 * recipe.seed
    if sound:
        return make_dataset("attributes", n, seed=8 + s, sound=True)
    return make_dataset("attributes", n, seed=7 + s, domain=domain)


def transfer_tasks(recipe: TransferRecipe, tower: Encoder) -> dict[str, tuple]:
    """Chapter 5's two new domains as (encoder, labelled pool, test set, batch key): 'sketch'
    (``tower`` on outlines) and 'sound' (``tower`` hearing spectrograms, ``SoundAsImage``)."""
    return {"sketch": (tower, domain_pool(recipe, "sketch"), domain_test(recipe, "sketch"), "image"),
            "sound": (SoundAsImage(tower), domain_pool(recipe, sound=True), domain_test(recipe, sound=True),
                      "sound")}


def compare_transfer(recipe: TransferRecipe, tower: Encoder, tasks: dict | None = None, *, device=None,
                     progress: bool = True) -> tuple[dict, dict]:
    """Every strategy at every label budget of ``recipe`` on each task (``transfer_tasks``).
    Returns ``(tables, models)``: ``tables[task][strategy][k]`` test accuracies and
    ``models[task][strategy]`` the classifiers trained at the largest k."""
    tasks = tasks or transfer_tasks(recipe, tower)
    tables, models = {}, {}
    for task, (encoder, pool, test, key) in tasks.items():
        tables[task], models[task] = compare_strategies(
            encoder, pool, test, "shape", len(world.SHAPES), recipe.ks, key=key, seed=recipe.seed, device=device,
            progress=progress, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size)
    return tables, models


def compare_normalisation(recipe: TransferRecipe, tower: Encoder, tasks: dict | None = None, *, device=None
                          ) -> dict[str, float]:
    """Fine-tuning and LP-FT on sketches at the largest k, with the encoder's pretrained
    batch-norm statistics (the book's policy) and with each batch's: test accuracy of each."""
    _, pool, test, key = (tasks or transfer_tasks(recipe, tower))["sketch"]
    few = pool.subset(few_shot_indices(pool.labels["shape"], max(recipe.ks), seed=recipe.seed))
    out = {}
    for strategy in ("fine_tune", "lp_ft"):
        for frozen, policy in ((True, "pretrained stats"), (False, "batch stats")):
            model = adapt(tower, few, "shape", len(world.SHAPES), strategy, key=key, steps=recipe.steps,
                          lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed, frozen_statistics=frozen,
                          device=device)
            out[f"{strategy}, {policy}"] = evaluate(model, test, "shape")
    return out


__all__ = ["STRATEGIES", "reinitialise", "Classifier", "extract_features", "adapt", "SoundAsImage",
           "zero_shot_equivalent_shots", "compare_strategies", "domain_test", "domain_pool", "transfer_tasks", "compare_transfer",
           "compare_normalisation"]
