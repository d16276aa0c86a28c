"""Pretraining from image-caption pairs (source article §2.3; chapters 4 to 6): the models of the
three objectives, the book's CLIP, the comparisons of chapters 4b and 5 (objectives, temperature,
softmax vs sigmoid, locked-image tuning), and the command line.

``pretrain`` trains a pretraining model (``mmlib.models``: ``DualEncoder``, ``BagOfWordsModel``,
``CaptioningModel``; each owns its loss) through the book's one loop, ``mmlib.train.fit_steps``.

The book's CLIP is one constructor, ``clip_model``, and one recipe, ``mmlib.recipes.ClipRecipe``:
chapter 4 trains it in front of the reader (``train_clip``), which keeps the weights in a cache
folder (``mmlib.checkpoint.cache_dir()``) keyed by the recipe and the code that trains it; later
chapters load them (``pretrained_clip``), or train the same recipe when run alone.

The same training runs from the command line, on one process or as N under ``torchrun``::

    python -m mmlib.pretrain --pairs 20000 --steps 200 --out clip.pt
    torchrun --standalone --nproc_per_node=2 -m mmlib.pretrain --pairs 20000 --steps 200 --out clip.pt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mmlib import distributed, world
from mmlib.checkpoint import cached_path, load_checkpoint, save_checkpoint
from mmlib.data import WorldDataset, make_dataset
from mmlib.encoders import BagOfEmbeddings, Encoder, ImageCNN, TinyViT
from mmlib.models import CONTRASTIVE_LOSSES, BagOfWordsModel, CaptioningModel, DualEncoder
from mmlib.recipes import ClipRecipe, LitRecipe, ObjectivesRecipe
from mmlib.text import Tokenizer
from mmlib.freezing import count_trainable, lock
from mmlib.train import Checkpointing, History, Optimisation, default_device, fit_steps
from mmlib.zeroshot import zero_shot_accuracy

OBJECTIVES = ("contrastive", "bag_of_words", "captioning")


def make_pretraining_model(objective: str, image_encoder: Encoder, tokenizer: Tokenizer,
                           text_encoder: Encoder | None = None, embed_dim: int = 64, **options) -> nn.Module:
    """The model for an objective, around the given image tower (``options`` go to its class)."""
    if objective == "contrastive":
        if text_encoder is None:
            raise ValueError("the contrastive objective needs a text_encoder (the second tower)")
        return DualEncoder(image_encoder, text_encoder, embed_dim=embed_dim, **options)
    if objective == "bag_of_words":
        return BagOfWordsModel(image_encoder, tokenizer)
    if objective == "captioning":
        return CaptioningModel(image_encoder, tokenizer, **options)
    raise ValueError(f"unknown objective {objective!r}: expected one of {OBJECTIVES}")


def pretrain(model: nn.Module, data: WorldDataset, *, epochs: int = 5, steps: int | None = None,
             batch_size: int = 256, lr: float = 3e-3, desc: str = "pretraining", **options) -> History:
    """Train a pretraining model on a pairs dataset for ``epochs`` passes (or exactly ``steps``
    steps) of full batches at peak learning rate ``lr``, through the one loop; ``options`` go to
    ``mmlib.train.fit_steps`` (device, seed, evaluate and eval_every, progress, ...)."""
    if data.tokens is None:
        raise ValueError("pretraining needs image-caption pairs: make_dataset('pairs', ...)")
    if not isinstance(epochs, int) or epochs <= 0 or batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    steps = steps or epochs * data.steps_per_epoch(batch_size, drop_last=True)
    return fit_steps(model, data, steps=steps, batch_size=batch_size, optim=Optimisation(lr=lr), drop_last=True,
                     desc=desc, **options)


# ---------------------------------------------------------------------------------------------
# The book's CLIP
# ---------------------------------------------------------------------------------------------

TOWERS = ("cnn", "vit")


def _tower(width: int, tower: str) -> Encoder:
    if tower not in TOWERS:
        raise ValueError(f"unknown image tower {tower!r}: expected one of {TOWERS}")
    return ImageCNN(dim=width, channels=(16, 32)) if tower == "cnn" else TinyViT(dim=width, depth=2, heads=4)


def image_tower(width: int = ClipRecipe.width, tower: str = ClipRecipe.tower, seed: int = 0) -> Encoder:
    """The book's image tower: an ``ImageCNN`` with ``width`` features (chapter 4), or a
    ``TinyViT``, which has no batch statistics (chapter 6). Initialised from ``seed`` (the same
    weights as ``clip_model``'s tower) without disturbing the caller's random numbers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _tower(width, tower)


def clip_model(vocab_size: int, width: int = ClipRecipe.width, tower: str = ClipRecipe.tower,
               loss: str = ClipRecipe.loss, seed: int = 0,
               **options) -> DualEncoder:
    """The book's CLIP (chapter 4): ``image_tower(width, tower)`` and a bag-of-embeddings text
    tower in a 64-d joint space; ``options`` go to ``DualEncoder`` (e.g. ``init_scale``). Seeded
    like ``image_tower``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = _tower(width, tower)
        return DualEncoder(image, BagOfEmbeddings(vocab_size, 64), embed_dim=64, loss=loss, **options)


def clip_pairs(n: int, seed: int = 0, distractors: float = 0.3, **options) -> WorldDataset:
    """The pretraining data of the book's CLIP: ``n`` noisy image-caption pairs (a fraction
    ``distractors`` of the captions with distractor words), the default colour-shape
    combinations held out; ``options`` go to ``make_dataset``."""
    return make_dataset("pairs", n, held_out=world.default_held_out(), distractors=distractors, seed=seed,
                        **options)


CLIP_CODE = ("mmlib.world", "mmlib.spectrogram", "mmlib.text", "mmlib.data", "mmlib.encoders", "mmlib.objectives",
             "mmlib.distributed", "mmlib.train")
"""The modules whose code decides the weights of the book's CLIP; with the model class and the
functions of this module that build and train it, they make its cache key (``clip_code``)."""


def clip_code() -> tuple:
    """Everything whose code decides the book's CLIP weights (``mmlib.checkpoint.code_fingerprint``):
    the modules of ``CLIP_CODE``, ``DualEncoder``, and this module's CLIP functions, but not the
    rest of ``mmlib.models`` or of this module (editing a comparison keeps the cache)."""
    return (*CLIP_CODE, DualEncoder, _tower, image_tower, clip_model, clip_pairs, pretrain, train_clip)


def _clip_cache(recipe: ClipRecipe) -> Path:
    return cached_path("clip", asdict(recipe), clip_code())


def train_clip(recipe: ClipRecipe = ClipRecipe(), *, cache: bool = True, device=None, progress: bool = True
               ) -> tuple[DualEncoder, History]:
    """Train the book's CLIP by ``recipe`` (chapter 4 does it in front of the reader) and keep its
    weights in the cache, so that later chapters load them (``pretrained_clip``). Returns the
    model and its ``History``. Deterministic, and the caller's random numbers are left as they
    were."""
    model = clip_model(len(Tokenizer.for_world()), recipe.width, recipe.tower, recipe.loss, recipe.seed)
    data = clip_pairs(recipe.pairs, recipe.seed)
    with torch.random.fork_rng(devices=[]):
        history = pretrain(model, data, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                           seed=recipe.seed, device=device, progress=progress, desc="pretraining the book's CLIP")
    if cache:
        save_checkpoint(model, _clip_cache(recipe), recipe=asdict(recipe))
    return model.eval(), history


def pretrained_clip(recipe: ClipRecipe = ClipRecipe(), *, cache: bool = True, device=None,
                    progress: bool = True) -> DualEncoder:
    """The book's CLIP trained by ``recipe``: loaded from the cache when chapter 4 (or an earlier
    call) trained these weights with the same code (``clip_code()``), else trained now by
    ``train_clip``. The same numbers either way."""
    path = _clip_cache(recipe)
    if cache and path.exists():
        model = clip_model(len(Tokenizer.for_world()), recipe.width, recipe.tower, recipe.loss, recipe.seed)
        load_checkpoint(model, path)
        return model.to(device or default_device()).eval()
    return train_clip(recipe, cache=cache, device=device, progress=progress)[0]


# ---------------------------------------------------------------------------------------------
# Chapter 4b: one tower and one data set, three objectives; temperature; softmax vs sigmoid
# ---------------------------------------------------------------------------------------------

def objectives_data(recipe: ObjectivesRecipe) -> dict[str, WorldDataset]:
    """Chapter 4b's data: 'train' (``recipe.pairs`` noisy pairs), 'small' (the first
    ``small_pairs`` of them), 'seen' and 'heldout' test pairs (``test_pairs`` each, fixed)."""
    train = clip_pairs(recipe.pairs, recipe.seed)
    held_out = world.default_held_out()
    return {"train": train, "small": train.subset(range(recipe.small_pairs)),
            "seen": make_dataset("pairs", recipe.test_pairs, held_out=held_out, split="test"),
            "heldout": make_dataset("pairs", recipe.test_pairs, held_out=held_out, split="heldout")}


def compare_objectives(recipe: ObjectivesRecipe, data: dict | None = None, *, device=None, progress: bool = True
                       ) -> dict[str, dict]:
    """The book's image tower pretrained on the same pairs by each of ``OBJECTIVES``. Per
    objective: 'model', 'curve' (zero-shot accuracy on held-out pairs against images seen),
    'heldout' and 'seen' (zero-shot accuracy at the end)."""
    data = data or objectives_data(recipe)
    vocab = len(data["train"].tokenizer)
    out = {}
    for objective in OBJECTIVES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = make_pretraining_model(objective, image_tower(seed=recipe.seed), data["train"].tokenizer,
                                           text_encoder=BagOfEmbeddings(vocab, 64))
        history = pretrain(model, data["train"], epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                           seed=recipe.seed, device=device, progress=progress, desc=objective,
                           evaluate=lambda m: zero_shot_accuracy(m, data["heldout"]), eval_every=recipe.eval_every)
        out[objective] = {"model": model, "curve": history.evals, "heldout": history.evals[-1][1],
                          "seen": zero_shot_accuracy(model, data["seen"])}
    return out


def compare_temperatures(recipe: ObjectivesRecipe, data: dict | None = None, *, device=None,
                         progress: bool = True) -> dict[float, DualEncoder]:
    """The book's CLIP on the small data with each fixed temperature of ``recipe.temperatures``
    (the logit scale 1 / tau, not learned): the models, for the modality gap."""
    data = data or objectives_data(recipe)
    models = {}
    for tau in recipe.temperatures:
        models[tau] = clip_model(len(data["small"].tokenizer), seed=recipe.seed, init_scale=1 / tau,
                                 learn_scale=False)
        pretrain(models[tau], data["small"], epochs=recipe.epochs, batch_size=recipe.small_batch, lr=recipe.lr,
                 seed=recipe.seed, device=device, progress=progress, desc=f"tau={tau}")
    return models


def compare_batch_losses(recipe: ObjectivesRecipe, data: dict | None = None, *, device=None,
                         progress: bool = True) -> dict[str, float]:
    """Softmax (CLIP) and sigmoid (SigLIP) contrastive losses on the small data at each batch size
    of ``recipe.batch_sizes`` (learning rate scaled by the square root of the batch): zero-shot
    accuracy on seen pairs, 'clip, batch 16', ..., and 'sigmoid - softmax, batch 16', ..."""
    data = data or objectives_data(recipe)
    out = {}
    for batch_size in recipe.batch_sizes:
        lr = recipe.lr * (batch_size / recipe.small_batch) ** 0.5
        for loss in CONTRASTIVE_LOSSES:
            model = clip_model(len(data["small"].tokenizer), loss=loss, seed=recipe.seed)
            pretrain(model, data["small"], epochs=recipe.epochs, batch_size=batch_size, lr=lr, seed=recipe.seed,
                     device=device, progress=progress, desc=f"{loss}, batch {batch_size}")
            out[f"{loss}, batch {batch_size}"] = zero_shot_accuracy(model, data["seen"])
        out[f"sigmoid - softmax, batch {batch_size}"] = (out[f"siglip, batch {batch_size}"]
                                                         - out[f"clip, batch {batch_size}"])
    return out


# ---------------------------------------------------------------------------------------------
# Chapter 5: locked-image tuning, a new language for an old tower
# ---------------------------------------------------------------------------------------------

def lit_data(recipe: LitRecipe) -> dict[str, WorldDataset]:
    """Chinese image-caption pairs: 'train' (``recipe.pairs``, seed 11 + seed) and 'test'."""
    return {"train": make_dataset("pairs", recipe.pairs, language="zh", seed=11 + recipe.seed),
            "test": make_dataset("pairs", recipe.test, language="zh", split="test", seed=11)}


def chinese_clip(clip: DualEncoder, setting: str, vocab_size: int,
                 seed: int = 0) -> DualEncoder:
    """A dual encoder with a new text tower of ``vocab_size`` tokens and
    ``clip``'s image side (tower and projection) 'locked' (frozen,
    statistics fixed) or 'unlocked', or both new ('scratch')."""
    if setting not in ("locked", "unlocked", "scratch"):
        raise ValueError("setting is 'locked', 'unlocked' or 'scratch', "
                         f"got {setting!r}")
    model = clip_model(vocab_size, seed=seed)
    if setting != "scratch":
        for part in ("image_encoder", "image_proj"):
            pretrained = clip.get_submodule(part).state_dict()
            model.get_submodule(part).load_state_dict(pretrained)
    if setting == "locked":
        lock(model.image_encoder), lock(model.image_proj)
    return model


def compare_lit(recipe: LitRecipe, clip: DualEncoder, data: dict | None = None, *, device=None,
                progress: bool = True) -> dict[str, dict]:
    """Each of ``recipe.settings`` trained on the Chinese pairs: per setting, zero-shot
    'accuracy' on the Chinese test pairs, training 'seconds' and 'trainable' parameters."""
    data = data or lit_data(recipe)
    out = {}
    for setting in recipe.settings:
        model = chinese_clip(clip, setting, len(data["train"].tokenizer), recipe.seed)
        run = pretrain(model, data["train"], epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                       seed=recipe.seed, device=device, progress=progress, desc=setting)
        out[setting] = {"accuracy": zero_shot_accuracy(model, data["test"], language="zh"),
                        "seconds": run.seconds, "trainable": count_trainable(model)}
    return out


# ---------------------------------------------------------------------------------------------
# The command line: python -m mmlib.pretrain, or torchrun ... -m mmlib.pretrain
# ---------------------------------------------------------------------------------------------

@dataclass
class Config:
    """Everything a command-line run depends on; saved in its checkpoint."""

    pairs: int = 20_000
    width: int = ClipRecipe.width
    tower: str = ClipRecipe.tower
    batch_size: int = ClipRecipe.batch_size
    steps: int = 200
    lr: float = ClipRecipe.lr
    loss: str = ClipRecipe.loss
    local_loss: bool = False
    seed: int = 0
    out: str | None = None
    resume: bool = False
    backend: str | None = None
    log: str | None = None
    save_every: int = 0
    stop_at: int | None = None
    progress: bool = True


def check_config(config: Config, world_size: int) -> None:
    """Clear errors for arguments that cannot work, before any process group is joined."""
    distributed.check_backend(config.backend)
    if config.tower not in TOWERS:
        raise ValueError(f"unknown image tower {config.tower!r}: expected one of {TOWERS}")
    if config.loss not in CONTRASTIVE_LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}: expected one of {CONTRASTIVE_LOSSES}")
    for name in ("pairs", "width", "batch_size", "steps"):
        if getattr(config, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    if config.batch_size % world_size:
        raise ValueError(f"the global batch size {config.batch_size} is not divisible by the {world_size} "
                         f"processes: use a multiple of {world_size}")
    if config.batch_size > config.pairs:
        raise ValueError(f"the batch size {config.batch_size} is larger than the dataset ({config.pairs} pairs)")
    if config.stop_at is not None and config.out is None:
        raise ValueError("--stop-at saves where it stops: give --out, the checkpoint to write")
    if config.resume and (config.out is None or not Path(config.out).exists()):
        raise ValueError(f"--resume needs an existing checkpoint at --out, but {config.out!r} does not exist")


def run(config: Config) -> dict:
    """One command-line run: the book's CLIP on ``config.pairs`` pairs, trained by the one loop on
    this process and, under torchrun, its peers. Returns the log: loss per step, throughput."""
    check_config(config, int(os.environ.get("WORLD_SIZE", "1")))
    device = distributed.join(config.backend)
    try:
        data = clip_pairs(config.pairs, config.seed)
        model = clip_model(len(data.tokenizer), config.width, config.tower, config.loss, config.seed,
                           local_loss=config.local_loss)
        saving = None if config.out is None else Checkpointing(config.out, config.save_every, config.resume,
                                                               config.stop_at)
        history = fit_steps(model, data, steps=config.steps, batch_size=config.batch_size,
                            optim=Optimisation(lr=config.lr), seed=config.seed, device=device, checkpoint=saving,
                            progress=config.progress, desc=f"pretraining on {distributed.world_size()} process(es)")
        log = {"loss": history.loss, "world_size": distributed.world_size(), "config": asdict(config),
               "seconds": history.seconds, "images_per_second": history.examples_per_second}
        if distributed.rank() == 0 and config.log:
            Path(config.log).write_text(json.dumps(log))
        return log
    finally:
        distributed.leave()


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except where it says nothing (None, flags)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m mmlib.pretrain", formatter_class=_DefaultsFormatter,
                                     description=(
        "Contrastive (CLIP or SigLIP) pretraining of the book's CLIP on its world, on one process "
        "or under torchrun --nproc_per_node=N (data parallel, global-batch contrastive loss)."))
    defaults = Config()
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="image-caption pairs to generate")
    parser.add_argument("--width", type=int, default=defaults.width, help="image tower width (feature dim)")
    parser.add_argument("--tower", default=defaults.tower, help="image tower: cnn (chapter 4) or vit")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch size")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps in total")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    parser.add_argument("--loss", default=defaults.loss, help="clip (softmax) or siglip (sigmoid)")
    parser.add_argument("--local-loss", action="store_true",
                        help="each process scores only its own rows against the global batch "
                             "(same gradients, logits b x N*b instead of N*b x N*b)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the data, the model and the batches")
    parser.add_argument("--out", default=None, help="checkpoint to write (rank 0 only)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    parser.add_argument("--save-every", type=int, default=0, help="also checkpoint every this many steps")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop (and checkpoint) after this step, as a time-limited job would; continue with --resume")
    parser.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with CUDA, else gloo)")
    parser.add_argument("--history", dest="log", default=None, help="write the loss per step and throughput to this JSON file")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return Config(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; bad arguments exit with status 2 and a one-line explanation."""
    config = parse_args(argv)
    try:
        log = run(config)
    except ValueError as err:
        print(f"python -m mmlib.pretrain: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{len(log['loss'])} steps on {log['world_size']} process(es); final loss {log['loss'][-1]:.4f}; "
              f"{log['images_per_second']:.0f} images/s")
    return 0


__all__ = ["OBJECTIVES", "make_pretraining_model", "pretrain", "TOWERS", "image_tower", "clip_model", "clip_pairs",
           "CLIP_CODE", "clip_code", "train_clip", "pretrained_clip", "objectives_data", "compare_objectives",
           "compare_temperatures", "compare_batch_losses", "lit_data", "chinese_clip", "compare_lit", "Config",
           "check_config", "run", "parse_args", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
