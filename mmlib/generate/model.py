"""The text-to-image model (chapter 8): a caption encoder (a small trainable Transformer, or a
frozen tower such as chapter 4's CLIP text encoder) and the U-Net denoiser, trained by flow
matching or DDPM; ``generate_images`` samples it with classifier-free guidance. The book's
generator is one recipe (``mmlib.recipes.GeneratorRecipe``), trained for longer than a chapter's
budget and shipped with mmlib (``pretrained_generator``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from mmlib import shipped
from mmlib.data import WorldDataset
from mmlib.encoders import BagOfEmbeddings, Encoder, Features, TextTransformer
from mmlib.generate.diffusion import (DDPMSchedule, check_steps, ddim, ddpm_loss, euler, flow_data_loss, flow_matching_loss,
                                      guide, velocity_from_data)
from mmlib.generate.prompts import IMAGE_SIZE, generation_data, parse_prompt
from mmlib.generate.unet import UNet
from mmlib.recipes import GeneratorRecipe
from mmlib.text import Tokenizer
from mmlib.train import EMA, Optimisation, default_device, fit_steps

OBJECTIVES = ("flow", "ddpm")
TARGETS = {"flow": ("velocity", "data"), "ddpm": ("noise",)}
"""What the network predicts, per objective; the sampler always receives velocity (flow) or
noise (ddpm)."""


class TextToImage(nn.Module):
    """A text-to-image model: caption encoder + U-Net denoiser, trained by ``objective``
    ('flow': the straight path from noise to data; 'ddpm': the noise), the network predicting
    ``target`` ('velocity' or the clean 'data' for flow; 'noise' for ddpm), with the caption dropped with
    probability ``p_uncond`` (replaced by a learned 'no caption') for classifier-free guidance.

    text_encoder: any ``Encoder`` of token ids (default: a one-layer ``TextTransformer`` trained
    with the rest); freeze a pretrained one with ``fit_steps(..., optim=Optimisation(lr_scale={'text_encoder': 0}))``.
    """

    def __init__(self, tokenizer: Tokenizer, *, channels: tuple[int, int], objective: str = "flow",
                 text_encoder: Encoder | None = None, text_dim: int = 64, p_uncond: float = 0.1,
                 cross_attention: bool = True, schedule: DDPMSchedule | None = None,
                 target: str | None = None):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}: expected one of {OBJECTIVES}")
        target = target or TARGETS[objective][0]
        if target not in TARGETS[objective]:
            raise ValueError(f"a {objective!r} model predicts one of {TARGETS[objective]}, got {target!r}")
        self.target = target
        if not 0 <= p_uncond < 1:
            raise ValueError(f"p_uncond is a probability in [0, 1), got {p_uncond!r}")
        self.tokenizer, self.objective, self.p_uncond = tokenizer, objective, p_uncond
        self.text_encoder = text_encoder or TextTransformer(len(tokenizer), text_dim, depth=1, max_len=16)
        d = self.text_encoder.dim
        self.null_pooled = nn.Parameter(torch.zeros(d))
        self.null_token = nn.Parameter(torch.randn(d) * 0.02)
        self.unet = UNet(d, channels, IMAGE_SIZE, cross_attention)
        self.schedule = schedule or DDPMSchedule.linear()

    def condition(self, tokens: torch.Tensor, drop: torch.Tensor | None = None) -> Features:
        """The caption's features; rows where ``drop`` is True get the learned 'no caption'
        instead (one null token, and the null pooled vector)."""
        text = self.text_encoder.encode(tokens)
        if drop is None or not bool(drop.any()):
            return text
        keep = ~drop[:, None]
        pooled = torch.where(keep, text.pooled, self.null_pooled.expand_as(text.pooled))
        first = torch.zeros_like(text.mask)
        first[:, 0] = True
        mask = torch.where(keep, text.mask, first)
        null = self.null_token.expand_as(text.tokens)
        return Features(pooled, torch.where(keep[..., None], text.tokens, null), mask)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: Features) -> torch.Tensor:
        """The velocity (flow) or noise (ddpm) for noisy images ``x`` at times ``t``."""
        out = self.unet(x, t, text)
        return velocity_from_data(out, x, t) if self.target == "data" else out

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"] * 2 - 1
        n = len(x)
        drop = torch.rand(n, device=x.device) < self.p_uncond
        text = self.condition(batch["tokens"], drop)
        noise = torch.randn_like(x)
        predict = lambda point, t: self.unet(point, t, text)  # noqa: E731
        if self.objective == "flow":
            t = torch.rand(n, device=x.device)
            objective = flow_data_loss if self.target == "data" else flow_matching_loss
            return {"loss": objective(predict, x, noise, t)}
        step = torch.randint(0, self.schedule.steps, (n,), device=x.device)
        return {"loss": ddpm_loss(predict, x, noise, step, self.schedule)}

    def tokens(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of prompts, checked first (``parse_prompt`` raises on unknown words)."""
        if isinstance(texts, str) or not len(texts):
            raise ValueError("give a non-empty list of prompts, e.g. ['a red circle']")
        for text in texts:
            parse_prompt(text)
        return self.tokenizer.batch(list(texts))[0]




STEPS = 10
"""The book's number of sampler steps (chapter 8 measures others)."""

GUIDANCE = 3.0
"""The book's guidance weight (chapter 8 measures others)."""


@torch.no_grad()
def generate_images(model: TextToImage, texts: Sequence[str], *, steps: int = STEPS, guidance: float = GUIDANCE,
                    seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Images (n, 3, 16, 16) in [0, 1] for ``texts``: Euler (flow) or DDIM (ddpm) with
    ``steps`` steps and guidance weight ``guidance`` (by default the book's setting, ``STEPS``
    and ``GUIDANCE``). The starting noise is drawn on the CPU from
    ``seed``, so the same call gives the same images, up to rounding, on any device and with
    any ``batch_size`` (prompts per forward pass, twice as many pictures when guided; 64 ran a
    third faster on a CPU than 512: the feature maps stay in its cache)."""
    check_steps(steps)
    if guidance < 0:
        raise ValueError(f"the guidance weight is >= 0 (1 = no guidance), got {guidance}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    tokens = model.tokens(texts).to(device)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(texts), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(device)
    out = []
    for start in range(0, len(texts), batch_size):
        rows = slice(start, start + batch_size)
        text = model.condition(tokens[rows])
        blank = model.condition(tokens[rows], torch.ones(len(tokens[rows]), dtype=torch.bool, device=device))
        both = Features(torch.cat([text.pooled, blank.pooled]), torch.cat([text.tokens, blank.tokens]),
                        torch.cat([text.mask, blank.mask]))  # the guided pair as one batch

        def field(x, t):
            if guidance == 1:
                return model(x, t, text)
            if guidance == 0:
                return model(x, t, blank)
            c, u = model(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return guide(c, u, guidance)

        if model.objective == "flow":
            x = euler(field, noise[rows], steps)
        else:
            x = ddim(field, noise[rows], steps, model.schedule, clip=1.0)
        out.append(((x + 1) / 2).clamp(0, 1))
    model.train(was_training)
    return torch.cat(out)



TEXT_ENCODERS = ("trainable", "clip")
WEIGHTS = shipped.path_of("generator")
"""The shipped weights of ``pretrained_generator`` (written by ``benchmarks/train_generator.py``);
a recipe with ``text='clip'`` is shipped beside it as ``generator-clip.pt``."""


def weights_path(recipe: GeneratorRecipe) -> Path:
    """Where the shipped weights of ``recipe`` live."""
    if recipe.text not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {recipe.text!r}: expected one of {TEXT_ENCODERS}")
    return WEIGHTS if recipe.text == "trainable" else shipped.path_of(f"generator-{recipe.text}")


def generator_model(recipe: GeneratorRecipe = GeneratorRecipe(), tokenizer: Tokenizer | None = None,
                    text_encoder: Encoder | None = None) -> "TextToImage":
    """An untrained ``TextToImage`` of ``recipe``'s shape (for 'clip', around ``text_encoder`` or
    a tower of the shape of chapter 4's); initialised from the caller's random numbers."""
    tokenizer = tokenizer or Tokenizer.for_world()
    if recipe.text == "clip" and text_encoder is None:  # the architecture of chapter 4's text tower
        text_encoder = BagOfEmbeddings(len(tokenizer), 64)
    return TextToImage(tokenizer, channels=tuple(recipe.channels), target=recipe.target,
                       text_encoder=text_encoder)


def generator_data(recipe: GeneratorRecipe = GeneratorRecipe()) -> WorldDataset:
    """The captioned 16-pixel scenes ``recipe`` trains on (``generation_data``)."""
    return generation_data(recipe.examples, seed=recipe.seed, two_objects=recipe.two_objects)


def train_generator(recipe: GeneratorRecipe = GeneratorRecipe(), *, steps: int | None = None, device=None,
                    progress: bool = True, evaluate: Callable | None = None, eval_every: int = 0,
                    text_encoder: Encoder | None = None):
    """Train a ``TextToImage`` by ``recipe`` (``steps`` overrides its length; the learning-rate
    schedule then spans the shorter run). Returns the EMA model, in evaluation mode, and the
    ``History``; ``evaluate(ema_model)`` runs every ``eval_every`` steps. The caller's random
    numbers are left as they were. A 'clip' recipe needs ``text_encoder``: chapter 4's text
    tower (``mmlib.pretrain.pretrained_clip().text_encoder``), which stays frozen."""
    weights_path(recipe)  # checks recipe.text
    if recipe.text == "clip" and text_encoder is None:
        raise ValueError("a text='clip' recipe conditions on chapter 4's text tower: pass "
                         "text_encoder=mmlib.pretrain.pretrained_clip().text_encoder")
    data = generator_data(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = generator_model(recipe, data.tokenizer, copy.deepcopy(text_encoder) if text_encoder else None)
        model.to(memory_format=torch.channels_last)  # the same network; its training steps ~5% faster on a CPU
        ema = EMA(model, recipe.ema)
        frozen = {"text_encoder": 0.0} if recipe.text == "clip" else None
        history = fit_steps(model, data, steps=steps or recipe.steps, batch_size=recipe.batch_size,
                            optim=Optimisation(lr=recipe.lr, lr_scale=frozen), hooks=[ema], seed=recipe.seed,
                            device=device, progress=progress, desc="generator",
                            evaluate=(lambda _: evaluate(ema.model)) if evaluate else None, eval_every=eval_every)
    return ema.model.eval(), history


def retrain_hint(recipe: GeneratorRecipe) -> str:
    """The command that trains the shipped weights of ``recipe`` again."""
    return "python benchmarks/train_generator.py" + (f" --text {recipe.text}" if recipe.text != "trainable" else "")


def pretrained_generator(recipe: GeneratorRecipe = GeneratorRecipe(), *, path: str | Path | None = None,
                         device=None) -> "TextToImage":
    """The book's generator trained by ``recipe`` (about five minutes on two CPU cores, more than
    a chapter's budget), loaded from the weights shipped with mmlib. A missing file or one
    trained by another recipe raises a ValueError that says how to train it again."""
    model = generator_model(recipe, Tokenizer.for_world(), None)
    shipped.load(model, path if path is not None else weights_path(recipe), asdict(recipe), retrain_hint(recipe))
    return model.to(device or default_device()).eval()


def generator_record(recipe: GeneratorRecipe = GeneratorRecipe()) -> dict:
    """What the shipped weights of ``recipe`` say about their training: 'recipe', 'seconds',
    'torch', 'cpus'."""
    return shipped.record(weights_path(recipe), retrain_hint(recipe))


__all__ = ["OBJECTIVES", "TARGETS", "TextToImage", "STEPS", "GUIDANCE", "generate_images", "TEXT_ENCODERS", "WEIGHTS",
           "weights_path", "generator_model", "generator_data", "train_generator", "retrain_hint", "pretrained_generator", "generator_record"]
