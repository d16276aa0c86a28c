"""Pretraining from image-caption pairs (source article §2.3; chapters 4 to 6): the models of the
three objectives, the book's CLIP recipe, zero-shot classification, and the command line.

``pretrain`` trains a pretraining model (``mmlib.models``: ``DualEncoder``, ``BagOfWordsModel``,
``CaptioningModel``; each owns its loss) through the book's one loop, ``mmlib.train.fit_steps``.

The book's CLIP (chapter 4's recipe) is one constructor, ``clip_model``; ``pretrained_clip`` trains
it once with a fixed seed and keeps the weights in a cache folder (``cache_dir()``), so later
chapters load instead of retraining, with the same numbers either way.

The same training runs from the command line, on one process or as N under ``torchrun``::

    python -m mmlib.pretrain --pairs 20000 --steps 200 --out clip.pt
    torchrun --standalone --nproc_per_node=2 -m mmlib.pretrain --pairs 20000 --steps 200 --out clip.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

import mmlib
from mmlib import distributed, world
from mmlib.data import WorldDataset, make_dataset
from mmlib.encoders import BagOfEmbeddings, Encoder, ImageCNN, TinyViT
from mmlib.metrics import class_embeddings, zero_shot_logits
from mmlib.models import CONTRASTIVE_LOSSES, BagOfWordsModel, CaptioningModel, DualEncoder
from mmlib.text import Tokenizer
from mmlib.checkpoint import load_checkpoint, save_checkpoint
from mmlib.train import Checkpointing, History, Optimisation, default_device, fit_steps

PROMPT_TEMPLATES = tuple(f"a {size} {{}} {where}" for size in world.SIZES
                         for where in ("in the centre", "on the left", "on the right", "at the top", "at the bottom",
                                       "in the top left", "in the top right", "in the bottom left",
                                       "in the bottom right"))
"""Prompt templates for zero-shot classification; '{}' becomes e.g. 'red circle'. Like CLIP's
per-dataset prompts, they say what captions in this world say: every size and position (18)."""

CHINESE_PROMPT_TEMPLATES = tuple(f"一个{world.ZH_SIZES[size]}的{{}}在{world.ZH_POSITIONS[where]}"
                                 for size in world.SIZES for where in world.POSITIONS)
"""The same 18 prompts in Chinese, worded as ``world.chinese_captions`` words them: '一个小的{}在左边'."""

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


def image_tower(width: int = 128, tower: str = "cnn", seed: int = 0) -> Encoder:
    """The book's image tower: an ``ImageCNN`` with ``width`` features (chapter 4), or a
    ``TinyViT``, which has no batch statistics (chapter 6). Initialised from ``seed`` (the same
    weights as ``clip_model``'s tower) without disturbing the caller's random numbers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _tower(width, tower)


def clip_model(vocab_size: int, width: int = 128, tower: str = "cnn", loss: str = "clip", seed: int = 0,
               **options) -> DualEncoder:
    """The book's CLIP (chapter 4): ``image_tower(width, tower)`` and a bag-of-embeddings text
    tower in a 64-d joint space; ``options`` go to ``DualEncoder`` (e.g. ``init_scale``). Seeded
    like ``image_tower``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = _tower(width, tower)
        return DualEncoder(image, BagOfEmbeddings(vocab_size, 64), embed_dim=64, loss=loss, **options)


def clip_pairs(n: int, seed: int = 0, **options) -> WorldDataset:
    """The pretraining data of the book's CLIP: ``n`` noisy image-caption pairs (30 % of captions
    with distractor words), the default colour-shape combinations held out."""
    return make_dataset("pairs", n, held_out=world.default_held_out(), distractors=0.3, seed=seed, **options)


@dataclass(frozen=True)
class ClipRecipe:
    """Everything that decides the weights of a ``pretrained_clip``: chapter 4's model, data and
    training (3 epochs of 30,000 pairs, about 20 s on a laptop CPU)."""

    pairs: int = 30_000
    width: int = 128
    tower: str = "cnn"
    loss: str = "clip"
    epochs: int = 3
    batch_size: int = 256
    lr: float = 4e-3
    seed: int = 0


def cache_dir() -> Path:
    """Where trained weights are kept: ``$MMLIB_CACHE``, else ``$XDG_CACHE_HOME/mmlib``, else
    ``~/.cache/mmlib``. Deleting the folder is always safe (the weights are trained again)."""
    if os.environ.get("MMLIB_CACHE"):
        return Path(os.environ["MMLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmlib"


def _library_fingerprint() -> str:
    """mmlib's version and source, and torch's version: weights trained by other code differ."""
    digest = hashlib.sha256(f"{mmlib.__version__} {torch.__version__}".encode())
    for path in sorted(Path(mmlib.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pretrained_clip(recipe: ClipRecipe = ClipRecipe(), *, cache: bool = True, device=None,
                    progress: bool = True) -> DualEncoder:
    """The book's CLIP trained by ``recipe``: loaded from the cache when these weights were trained
    before (same recipe, same library), else trained now (and cached). Deterministic, and the
    caller's random numbers are left as they were, so a chapter prints the same either way."""
    key = hashlib.sha256((json.dumps(asdict(recipe), sort_keys=True) + _library_fingerprint()).encode())
    path = cache_dir() / f"clip-{key.hexdigest()[:16]}.pt"
    vocab = len(Tokenizer.for_world())
    model = clip_model(vocab, recipe.width, recipe.tower, recipe.loss, recipe.seed)
    if cache and path.exists():
        load_checkpoint(model, path)
        return model.to(device or default_device()).eval()
    with torch.random.fork_rng(devices=[]):
        pretrain(model, clip_pairs(recipe.pairs, recipe.seed), epochs=recipe.epochs, batch_size=recipe.batch_size,
                 lr=recipe.lr, seed=recipe.seed, device=device, progress=progress, desc="pretraining the book's CLIP")
    if cache:
        save_checkpoint(model, path, recipe=asdict(recipe))
    return model


# ---------------------------------------------------------------------------------------------
# Zero-shot classification
# ---------------------------------------------------------------------------------------------

def class_names(pairs: Sequence[tuple[str, str]], language: str = "en") -> list[str]:
    """'red circle' (or '红色圆形' with language='zh') for ('red', 'circle')."""
    if language == "en":
        return [f"{c} {s}" for c, s in pairs]
    if language == "zh":
        return [world.ZH_COLORS[c] + world.ZH_SHAPES[s] for c, s in pairs]
    raise ValueError(f"language must be 'en' or 'zh', got {language!r}")


@torch.no_grad()
def zero_shot_scores(model: nn.Module, images: torch.Tensor, pairs: Sequence[tuple[str, str]],
                     tokenizer: Tokenizer, templates: Sequence[str] | None = None,
                     batch_size: int = 500, aggregate: str = "marginal", language: str = "en") -> torch.Tensor:
    """Scores (N, C) of each image for each (colour, shape) class, from text alone.

    contrastive, aggregate='mean': cosine similarity to the class embedding averaged over the
                 templates (CLIP's prompt ensembling, §3.1.4);
    contrastive, aggregate='marginal': log sum over templates of exp(scale * similarity), i.e. the
                 class's probability summed over the nuisance attributes the templates spell out
                 (size, position);
    bag of words: mean log-probability of the class's words;
    captioning:   best log-likelihood of 'a {size} {colour} {shape}' over the two sizes.

    language='zh' names the classes in Chinese, with ``CHINESE_PROMPT_TEMPLATES`` unless
    ``templates`` are given (contrastive models only).
    """
    device = next(model.parameters()).device
    names = class_names(pairs, language)
    if templates is None:
        templates = PROMPT_TEMPLATES if language == "en" else CHINESE_PROMPT_TEMPLATES
    if language != "en" and not isinstance(model, DualEncoder):
        raise ValueError(f"Chinese prompts need a contrastive model, not a {type(model).__name__}")
    images = images.to(device)
    if isinstance(model, DualEncoder):
        def embed(texts):
            return model.embed_texts(tokenizer.batch(list(texts))[0].to(device))
        image_emb = torch.cat([model.embed_images(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        if aggregate == "mean":
            return zero_shot_logits(image_emb, class_embeddings(embed, names, templates))
        if aggregate == "marginal":
            prompts = torch.stack([embed([t.format(n) for t in templates]) for n in names])  # (C, T, D)
            return (model.scale * torch.einsum("nd,ctd->nct", image_emb, prompts)).logsumexp(-1)
        raise ValueError(f"aggregate must be 'mean' or 'marginal', got {aggregate!r}")
    if isinstance(model, BagOfWordsModel):
        word_ids = torch.tensor([[tokenizer.stoi[c], tokenizer.stoi[s]] for c, s in pairs], device=device)  # (C, 2)
        logp = torch.cat([model(images[i:i + batch_size]).log_softmax(-1) for i in range(0, len(images), batch_size)])
        return logp[:, word_ids].mean(-1)  # (N, C)
    if isinstance(model, CaptioningModel):
        states = torch.cat([model.image_state(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        scores = []
        for size in world.SIZES:
            prompts, _ = tokenizer.batch([f"a {size} {name}" for name in names])
            prompts = prompts.to(device)
            per_class = [model.log_likelihood(images, prompts[c:c + 1].expand(len(images), -1), image=states)
                         for c in range(len(names))]
            scores.append(torch.stack(per_class, dim=1))
        return torch.stack(scores).max(0).values
    raise ValueError(f"no zero-shot classifier for a {type(model).__name__}")


def zero_shot_accuracy(model: nn.Module, data, pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer,
                       templates: Sequence[str] | None = None, aggregate: str = "marginal",
                       language: str = "en") -> float:
    """Accuracy of zero-shot classification of ``data``'s images into the (colour, shape) ``pairs``."""
    index = {pair: i for i, pair in enumerate(pairs)}
    objs = [(world.COLORS[c], data.scenes.shapes[s]) for c, s in zip(data.scenes.color[:, 0], data.scenes.shape[:, 0])]
    missing = {o for o in objs if o not in index}
    if missing:
        raise ValueError(f"the images contain classes that are not among the candidates: {sorted(missing)[:3]}")
    labels = torch.tensor([index[o] for o in objs])
    scores = zero_shot_scores(model, data.images.float() / 255, pairs, tokenizer, templates, aggregate=aggregate,
                              language=language)
    return (scores.argmax(1).cpu() == labels).float().mean().item()


# ---------------------------------------------------------------------------------------------
# The command line: python -m mmlib.pretrain, or torchrun ... -m mmlib.pretrain
# ---------------------------------------------------------------------------------------------

@dataclass
class Config:
    """Everything a command-line run depends on; saved in its checkpoint."""

    pairs: int = 20_000
    width: int = 128
    tower: str = "cnn"
    batch_size: int = 256
    steps: int = 200
    lr: float = 4e-3
    loss: str = "clip"
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


if __name__ == "__main__":
    raise SystemExit(main())
