"""Generating images from text, judged exactly (chapter 8).

A caption goes in, pixels come out: the *output layer* of the book's architecture made
generative. The parts, each small enough to read in one sitting:

- **Prompts** (``prompts``, ``parse_prompt``): "a large red circle in the top left", "a red circle
  and a blue square". Size and position may be left out; the generator must then choose them.
- **Objectives** as plain functions of tensors: flow matching (``flow_path``,
  ``flow_matching_loss``: regress the velocity ``x - noise`` of the straight path from noise to
  data; Lipman et al. 2022, Liu et al. 2022, the objective of Stable Diffusion 3) and DDPM noise
  prediction (``DDPMSchedule``, ``ddpm_noised``, ``ddpm_loss``; Ho et al. 2020).
- **Samplers**: ``euler`` integrates a velocity field from noise (t = 0) to data (t = 1);
  ``ddim`` walks a noise predictor down its schedule deterministically (Song et al. 2021);
  ``guide`` is classifier-free guidance, ``u + w (c - u)`` (Ho & Salimans 2022).
- **The model** (``TextToImage``): a caption encoder (a small trainable Transformer, or a frozen
  tower such as the book's CLIP text encoder, as Imagen and unCLIP freeze theirs) and a small
  U-Net (``UNet``) whose blocks are modulated by the caption and the time (FiLM) and attend to
  the caption's tokens (cross-attention). Its ``loss`` drops the caption with probability
  ``p_uncond``, so the same network is also the unconditional model guidance needs.
- **The judge** (``Judge``): a classifier of the world's attributes trained on rendered images.
  Because the world is procedural, it reads a generated image exactly: which colour-shape pairs
  are in it, and the size and position of a single object (``judge_accuracy``, ``faithfulness``,
  ``diversity``).

Images here are 16 x 16 (a quarter of the pixels of 32 x 32, and still every attribute is
readable), scaled to [-1, 1] inside the model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmlib import shipped, world
from mmlib.data import WorldDataset, render_uint8
from mmlib.encoders import Encoder, Features, TextTransformer
from mmlib.text import Tokenizer

IMAGE_SIZE = 16
"""The side of the generated images, in pixels."""

PAIRS = tuple((c, s) for c in world.COLORS for s in world.SHAPES)
"""Every colour-shape pair the judge can see (8 x 6 = 48)."""

MARGIN = 0.03
"""One-object scenes keep their centre this far (a fraction of the side) from the lines between
the thirds, so that a 16-pixel image shows its position word unambiguously."""


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------

def clear_scenes(n: int, n_objects: int = 1, *, seed: int = 0, margin: float = MARGIN,
                 **options) -> world.Scenes:
    """``n`` scenes (``world.sample_scenes``) whose objects, in one-object scenes, sit at least
    ``margin`` from the lines between the thirds: their position word is never a matter of one
    pixel. Two-object scenes are drawn with distinct colours and shapes."""
    if n_objects == 1:
        scenes = world.sample_scenes(2 * n + 64, 1, seed=seed, **options)
        ok = np.ones(len(scenes), bool)
        for v in (scenes.x[:, 0], scenes.y[:, 0]):
            ok &= (np.abs(v - 1 / 3) > margin) & (np.abs(v - 2 / 3) > margin)
        keep = np.nonzero(ok)[0][:n]
        if len(keep) < n:  # pragma: no cover - about 70 % of scenes pass
            raise RuntimeError("too few scenes clear of the thirds' lines; lower the margin")
        return scenes[keep]
    return world.sample_scenes(n, n_objects, seed=seed, distinct=True, **options)


def mixed_scenes(n: int, two_objects: float, *, seed: int = 0, **options) -> world.Scenes:
    """``n`` scenes from ``clear_scenes``: the first ``n - round(two_objects n)`` with one
    object, the rest with two (seeds ``seed`` and ``seed + 1``)."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer of at least 2 scenes, got {n!r}")
    if not 0 <= two_objects < 1:
        raise ValueError(f"two_objects is a fraction in [0, 1), got {two_objects!r}")
    n2 = int(round(two_objects * n))
    parts = [clear_scenes(n - n2, 1, seed=seed, **options)]
    if n2:
        parts.append(clear_scenes(n2, 2, seed=seed + 1, **options))
    return world.Scenes.concatenate(parts)


def prompt_for(objects: Sequence[dict], size: bool = False, position: bool = False) -> str:
    """The prompt for a scene's objects: 'a [size] colour shape [position]', joined by 'and'.
    Size and position are named only for one object, when asked for."""
    if not objects:
        raise ValueError("a prompt needs at least one object")
    if len(objects) > 1:
        return " and ".join(f"a {o['color']} {o['shape']}" for o in objects)
    o = objects[0]
    words = ["a", o["size"]] if size else ["a"]
    words += [o["color"], o["shape"]]
    if position:
        words.append(world.language._position_phrase(o["position"]))
    return " ".join(words)


def prompts(scenes: world.Scenes, *, seed: int = 0, size: float = 0.5,
            position: float = 0.5) -> list[str]:
    """One prompt per scene (seeded); a one-object prompt names the size with probability
    ``size`` and the position with probability ``position``."""
    rng = np.random.default_rng(seed)
    with_size, with_position = rng.random(len(scenes)) < size, rng.random(len(scenes)) < position
    return [prompt_for(scenes.objects(i), bool(with_size[i]), bool(with_position[i]))
            for i in range(len(scenes))]


_LINKS = ("in", "at", "on", "the")


def parse_prompt(text: str) -> list[dict]:
    """What a prompt asks for: one dict per object with 'color', 'shape', and 'size' and
    'position' (None when the prompt leaves them free). Raises a ValueError a learner can act
    on for an empty prompt or a word the world does not know."""
    if not isinstance(text, str) or not text.split():
        raise ValueError(f"a prompt is a non-empty string such as 'a red circle', got {text!r}")
    known = set(world.COLORS) | set(world.SHAPES) | set(world.SIZES) | set(_LINKS) | {"a", "and"}
    known |= {w for p in world.POSITIONS for w in p.split()}
    unknown = [w for w in text.split() if w not in known]
    if unknown:
        raise ValueError(f"unknown word {unknown[0]!r} in the prompt {text!r}: prompts use the colours "
                         f"{world.COLORS}, the shapes {world.SHAPES}, the sizes {world.SIZES} and "
                         f"positions such as 'in the top left'")
    objects = []
    for part in text.split(" and "):
        words = part.split()
        if not words or words[0] != "a":
            raise ValueError(f"each object of a prompt starts with 'a' ('a red circle'), got {part!r}")
        words = words[1:]
        obj = {"size": None, "position": None}
        if words and words[0] in world.SIZES:
            obj["size"] = words.pop(0)
        if len(words) < 2 or words[0] not in world.COLORS or words[1] not in world.SHAPES:
            raise ValueError(f"an object is 'a [size] colour shape [position]', e.g. 'a small red "
                             f"circle on the left'; cannot read {part!r}")
        obj["color"], obj["shape"] = words[0], words[1]
        rest = [w for w in words[2:] if w not in _LINKS]
        if rest:
            where = " ".join(rest)
            if where not in world.POSITIONS:
                raise ValueError(f"unknown position {where!r} in {part!r}: expected one of {world.POSITIONS}")
            obj["position"] = where
        objects.append(obj)
    if len(objects) > 1 and any(o["size"] or o["position"] for o in objects):
        raise ValueError(f"prompts with two objects name only colours and shapes, got {text!r}")
    return objects


def generation_data(n: int, *, seed: int = 0, held_out=world.default_held_out(),
                    two_objects: float = 0.25, tokenizer: Tokenizer | None = None) -> WorldDataset:
    """Captioned 16-pixel scenes to train a generator on: a fraction ``two_objects`` of them
    with two objects ('a red circle and a blue square'), the rest with one, whose prompt names
    the size and the position half of the time each. No colour-shape pair in ``held_out``
    occurs. Labels: 'objects' (the count)."""
    scenes = mixed_scenes(n, two_objects, seed=seed, exclude=held_out)
    texts = prompts(scenes, seed=seed + 2)
    tokenizer = tokenizer or Tokenizer.for_world()
    tokens, lengths = tokenizer.batch(texts)
    images = render_uint8(scenes, IMAGE_SIZE, "clean")
    labels = {"objects": torch.as_tensor(scenes.count, dtype=torch.long)}
    return WorldDataset(images, labels, texts, tokens, lengths, None, scenes, tokenizer)


# ---------------------------------------------------------------------------------------------
# Objectives: flow matching and DDPM, as functions of tensors
# ---------------------------------------------------------------------------------------------

def _column(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def flow_path(x: torch.Tensor, noise: torch.Tensor,
              t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The straight path from noise (t = 0) to data (t = 1): the point
    ``x_t = (1 - t) noise + t x`` and its velocity ``x - noise`` (the
    same at every t)."""
    if x.shape != noise.shape:
        raise ValueError("data and noise must have the same shape, got "
                         f"{tuple(x.shape)} and {tuple(noise.shape)}")
    t = _column(t, x)
    return (1 - t) * noise + t * x, x - noise


def flow_matching_loss(predict: Callable, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flow matching: the mean squared error between ``predict(x_t, t)`` and the path's velocity."""
    point, velocity = flow_path(x, noise, t)
    return F.mse_loss(predict(point, t), velocity)


def velocity_from_data(data: torch.Tensor, point: torch.Tensor,
                       t: torch.Tensor,
                       t_max: float = 0.95) -> torch.Tensor:
    """The straight path's velocity implied by a prediction of the clean
    data: ``(data - x_t) / (1 - t)``, with t capped at ``t_max`` so the
    division stays tame near t = 1. Exact for the true data (t <= t_max):
    a network may predict the picture instead of the velocity."""
    return (data - point) / (1 - _column(t, point).clamp(max=t_max))


def flow_data_loss(predict: Callable, x: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """Flow matching with a data-predicting network: the mean squared
    error between ``predict(x_t, t)`` and the clean data ``x``."""
    point, _ = flow_path(x, noise, t)
    return F.mse_loss(predict(point, t), x)


@dataclass
class DDPMSchedule:
    """DDPM's noise schedule: ``betas`` (T,) and ``alphas_bar`` = the running product of
    ``1 - beta``; step s mixes ``sqrt(alphas_bar[s]) x + sqrt(1 - alphas_bar[s]) noise``."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, steps: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> "DDPMSchedule":
        """Ho et al.'s schedule: betas rising linearly from 1e-4 to 0.02 over 1,000 steps."""
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"a schedule needs an integer number of steps >= 2, got {steps!r}")
        if not 0 < beta_1 < beta_T < 1:
            raise ValueError(f"need 0 < beta_1 < beta_T < 1, got {beta_1}, {beta_T}")
        return cls(torch.linspace(beta_1, beta_T, steps, dtype=torch.float64))

    @property
    def steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_bar(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, 0)


def ddpm_noised(x: torch.Tensor, noise: torch.Tensor, step: torch.Tensor, schedule: DDPMSchedule) -> torch.Tensor:
    """DDPM's forward process in one jump: ``sqrt(a) x + sqrt(1 - a) noise``, a = alphas_bar[step]."""
    step = torch.as_tensor(step, dtype=torch.long)
    if int(step.min()) < 0 or int(step.max()) >= schedule.steps:
        raise ValueError(f"steps index the schedule: 0..{schedule.steps - 1}, got {step.tolist()}")
    a = _column(schedule.alphas_bar[step], x)
    return a.sqrt() * x + (1 - a).sqrt() * noise


def ddpm_loss(predict: Callable, x: torch.Tensor, noise: torch.Tensor, step: torch.Tensor,
              schedule: DDPMSchedule) -> torch.Tensor:
    """DDPM's simple loss: the mean squared error between ``predict(x_s, s / T)`` and the noise."""
    t = torch.as_tensor(step, dtype=torch.float32) / schedule.steps
    return F.mse_loss(predict(ddpm_noised(x, noise, step, schedule), t), noise)


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------

def guide(conditional: torch.Tensor, unconditional: torch.Tensor,
          w: float) -> torch.Tensor:
    """Classifier-free guidance: ``u + w (c - u)``. w = 1 is the
    conditional model, w = 0 the unconditional one, w > 1 pushes further
    in the direction the caption adds."""
    return unconditional + w * (conditional - unconditional)


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a sampler needs a positive integer number of steps, got {steps!r}")
    return steps


def euler(field: Callable, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate ``dx/dt = field(x, t)`` from t = 0 (``noise``) to t = 1 in ``steps`` equal steps."""
    x = noise
    for k in range(_check_steps(steps)):
        t = torch.full((len(x),), k / steps, device=x.device)
        x = x + field(x, t) / steps
    return x


def ddim(predict_noise: Callable, noise: torch.Tensor, steps: int, schedule: DDPMSchedule,
         clip: float | None = None) -> torch.Tensor:
    """DDIM's deterministic sampler: from the last step of ``schedule`` to data in ``steps``
    jumps; each predicts the noise, estimates the clean sample (clamped to ``[-clip, clip]``
    when given) and re-noises it to the next, smaller level."""
    _check_steps(steps)
    if steps > schedule.steps:
        raise ValueError(f"at most {schedule.steps} steps for this schedule, got {steps}")
    levels = torch.linspace(schedule.steps - 1, 0, steps).round().long().tolist()
    a_bar = schedule.alphas_bar
    x = noise
    for i, s in enumerate(levels):
        a = float(a_bar[s])
        eps = predict_noise(x, torch.full((len(x),), s / schedule.steps, device=x.device))
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        a_next = float(a_bar[levels[i + 1]]) if i + 1 < len(levels) else 1.0
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
    return x


# ---------------------------------------------------------------------------------------------
# The denoiser: a small U-Net conditioned on the time and the caption
# ---------------------------------------------------------------------------------------------

def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoids of ``1000 t`` at ``dim / 2`` frequencies, as Transformers embed positions."""
    half = dim // 2
    freq = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    angle = 1000.0 * t.float()[:, None] * freq
    return torch.cat([angle.sin(), angle.cos()], 1)


class FiLMBlock(nn.Module):
    """A residual block: group norm, SiLU, convolution, twice; between them the condition
    scales and shifts every channel (FiLM: ``h (1 + gamma) + beta``; Perez et al. 2018)."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, 1)
        h = self.norm2(h) * (1 + gamma) + beta
        return self.skip(x) + self.conv2(F.silu(h))


class CrossAttention(nn.Module):
    """Every pixel of a feature map attends to the caption's tokens (padding masked out) and
    adds what it reads: how a denoiser can put 'red' on the circle and 'blue' on the square."""

    def __init__(self, channels: int, text_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.attn = nn.MultiheadAttention(channels, heads, kdim=text_dim, vdim=text_dim, batch_first=True)

    def forward(self, x: torch.Tensor, text: Features) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        read, _ = self.attn(query, text.tokens, text.tokens, key_padding_mask=~text.mask, need_weights=False)
        return x + read.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """A two-level U-Net for 16-pixel images: FiLM blocks at 16, 8 and 4 pixels (``channels``:
    few at full resolution, where convolutions cost most, more below), skips across,
    cross-attention to the caption at 8 and 4 pixels (``cross_attention=False`` leaves only
    FiLM's pooled caption). Two coordinate channels tell every pixel where it is, which the
    position words need."""

    def __init__(self, text_dim: int, channels: tuple[int, int] = (16, 64), image_size: int = IMAGE_SIZE,
                 cross_attention: bool = True):
        super().__init__()
        (c, c2), d = channels, text_dim
        self.image_size, self.text_dim = image_size, text_dim
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.stem = nn.Conv2d(5, c, 3, padding=1)
        self.down1, self.pool1 = FiLMBlock(c, c, d), nn.Conv2d(c, c2, 3, 2, 1)
        self.down2, self.pool2 = FiLMBlock(c2, c2, d), nn.Conv2d(c2, c2, 3, 2, 1)
        self.middle = FiLMBlock(c2, c2, d)
        self.up2, self.up1 = FiLMBlock(2 * c2, c2, d), FiLMBlock(c2 + c, c, d)
        self.head = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
        self.attend = nn.ModuleList([CrossAttention(c2, d), CrossAttention(c2, d)]) if cross_attention else None
        grid = (torch.arange(image_size) + 0.5) / image_size * 2 - 1
        self.register_buffer("coords", torch.stack(torch.meshgrid(grid, grid, indexing="ij"))[None], persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: Features) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (B, 3, {self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        cond = text.pooled + self.time(time_embedding(t, self.text_dim))
        h1 = self.down1(self.stem(torch.cat([x, self.coords.expand(len(x), -1, -1, -1)], 1)), cond)
        h2 = self.down2(self.pool1(h1), cond)
        if self.attend is not None:
            h2 = self.attend[0](h2, text)
        h = self.middle(self.pool2(h2), cond)
        if self.attend is not None:
            h = self.attend[1](h, text)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), h2], 1), cond)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), h1], 1), cond)
        return self.head(h)


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

    def __init__(self, tokenizer: Tokenizer, *, objective: str = "flow", channels: tuple[int, int] = (16, 64),
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


@torch.no_grad()
def generate_images(model: TextToImage, texts: Sequence[str], *, steps: int = 20, guidance: float = 2.0,
                    seed: int = 0, batch_size: int = 512) -> torch.Tensor:
    """Images (n, 3, 16, 16) in [0, 1] for ``texts``: Euler (flow) or DDIM (ddpm) with
    ``steps`` steps and guidance weight ``guidance``. The starting noise is drawn on the CPU from
    ``seed``, so the same call gives the same images on any device."""
    _check_steps(steps)
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


# ---------------------------------------------------------------------------------------------
# The book's generator: one recipe, trained once for longer than a chapter's budget
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneratorRecipe:
    """How the book's generator is trained: flow matching with a data-predicting U-Net on
    ``examples`` captioned scenes, batches of ``batch_size`` for ``steps`` steps, sampled from an
    exponential moving average of the weights (decay ``ema``). ``text``: 'trainable' (a small
    Transformer trained with the U-Net) or 'clip' (chapter 4's CLIP text tower, frozen, as
    Imagen and unCLIP freeze theirs)."""

    steps: int = 4_500
    batch_size: int = 64
    lr: float = 3e-3
    examples: int = 20_000
    two_objects: float = 0.25
    channels: tuple[int, int] = (16, 64)
    target: str = "data"
    ema: float = 0.99
    seed: int = 0
    text: str = "trainable"


TEXT_ENCODERS = ("trainable", "clip")
WEIGHTS = shipped.path_of("generator")
"""The shipped weights of ``pretrained_generator`` (written by ``benchmarks/train_generator.py``);
a recipe with ``text='clip'`` is shipped beside it as ``generator-clip.pt``."""


def weights_path(recipe: GeneratorRecipe) -> Path:
    """Where the shipped weights of ``recipe`` live."""
    if recipe.text not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {recipe.text!r}: expected one of {TEXT_ENCODERS}")
    return WEIGHTS if recipe.text == "trainable" else shipped.path_of(f"generator-{recipe.text}")


def _generator(recipe: GeneratorRecipe, tokenizer: Tokenizer, text_encoder: Encoder | None) -> "TextToImage":
    if recipe.text == "clip" and text_encoder is None:  # the architecture of chapter 4's text tower
        from mmlib.encoders import BagOfEmbeddings

        text_encoder = BagOfEmbeddings(len(tokenizer), 64)
    return TextToImage(tokenizer, channels=tuple(recipe.channels), target=recipe.target,
                       text_encoder=text_encoder)


def train_generator(recipe: GeneratorRecipe = GeneratorRecipe(), *, steps: int | None = None, device=None,
                    progress: bool = True, evaluate: Callable | None = None, eval_every: int = 0,
                    text_encoder: Encoder | None = None):
    """Train a ``TextToImage`` by ``recipe`` (``steps`` overrides its length; the learning-rate
    schedule then spans the shorter run). Returns the EMA model, in evaluation mode, and the
    ``History``; ``evaluate(ema_model)`` runs every ``eval_every`` steps. The caller's random
    numbers are left as they were. A 'clip' recipe needs ``text_encoder``: chapter 4's text
    tower (``mmlib.pretrain.pretrained_clip().text_encoder``), which stays frozen."""
    from mmlib.train import EMA, Optimisation, fit_steps

    weights_path(recipe)  # checks recipe.text
    if recipe.text == "clip" and text_encoder is None:
        raise ValueError("a text='clip' recipe conditions on chapter 4's text tower: pass "
                         "text_encoder=mmlib.pretrain.pretrained_clip().text_encoder")
    data = generation_data(recipe.examples, seed=recipe.seed, two_objects=recipe.two_objects)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = _generator(recipe, data.tokenizer, copy.deepcopy(text_encoder) if text_encoder else None)
        ema = EMA(model, recipe.ema)
        frozen = {"text_encoder": 0.0} if recipe.text == "clip" else None
        history = fit_steps(model, data, steps=steps or recipe.steps, batch_size=recipe.batch_size,
                            optim=Optimisation(lr=recipe.lr, lr_scale=frozen), hooks=[ema], seed=recipe.seed,
                            device=device, progress=progress, desc="generator",
                            evaluate=(lambda _: evaluate(ema.model)) if evaluate else None, eval_every=eval_every)
    return ema.model.eval(), history


def _retrain_hint(recipe: GeneratorRecipe) -> str:
    return "python benchmarks/train_generator.py" + (f" --text {recipe.text}" if recipe.text != "trainable" else "")


def pretrained_generator(recipe: GeneratorRecipe = GeneratorRecipe(), *, path: str | Path | None = None,
                         device=None) -> "TextToImage":
    """The book's generator trained by ``recipe`` (about five minutes on two CPU cores, more than
    a chapter's budget), loaded from the weights shipped with mmlib. A missing file or one
    trained by another recipe raises a ValueError that says how to train it again."""
    from mmlib.train import default_device

    model = _generator(recipe, Tokenizer.for_world(), None)
    shipped.load(model, path if path is not None else weights_path(recipe), asdict(recipe), _retrain_hint(recipe))
    return model.to(device or default_device()).eval()


def generator_record(recipe: GeneratorRecipe = GeneratorRecipe()) -> dict:
    """What the shipped weights of ``recipe`` say about their training: 'recipe', 'seconds',
    'torch', 'cpus'."""
    return shipped.record(weights_path(recipe), _retrain_hint(recipe))


json_safe = shipped.json_safe


# ---------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------

def judge_data(n: int, *, seed: int = 0, two_objects: float = 0.25) -> WorldDataset:
    """Rendered 16-pixel scenes with what the judge must read: 'pairs' (n, 48) multi-hot over
    ``PAIRS``, 'objects', and for one-object scenes 'color', 'shape', 'size', 'position' (-1
    for two-object scenes). Every colour-shape pair occurs: the judge knows the whole world."""
    scenes = mixed_scenes(n, two_objects, seed=seed)
    pairs = torch.zeros(len(scenes), len(PAIRS))
    for j in range(scenes.shape.shape[1]):
        rows = np.nonzero(scenes.mask[:, j])[0]
        pairs[rows, scenes.color[rows, j] * len(world.SHAPES) + scenes.shape[rows, j]] = 1
    single = torch.as_tensor(scenes.count == 1)
    where = torch.as_tensor(world.scenes._position_index(scenes.x[:, 0], scenes.y[:, 0]))
    first = {"color": scenes.color[:, 0], "shape": scenes.shape[:, 0], "size": scenes.size[:, 0]}
    labels = {name: torch.where(single, torch.as_tensor(v, dtype=torch.long), -1) for name, v in first.items()}
    labels.update(pairs=pairs, objects=torch.as_tensor(scenes.count, dtype=torch.long),
                  position=torch.where(single, where, -1))
    images = render_uint8(scenes, IMAGE_SIZE, "clean")
    return WorldDataset(images, labels, scenes=scenes)


class Judge(nn.Module):
    """A small CNN (batch-normalised) that reads an image: for each of the 8 colours, which
    shape has that colour, or none (one 7-way choice per colour: the objects of a scene never
    share a colour); and the size and position word of a lone object. The evidence for a
    colour-shape pair is its strongest response anywhere in the image (max-pooling over
    places), so what the judge learns on one object it applies to each of two."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.body = nn.Sequential(*block(3, w), *block(w, w), nn.MaxPool2d(2), *block(w, 2 * w), nn.MaxPool2d(2),
                                  *block(2 * w, 2 * w))
        self.n_shapes = len(world.SHAPES) + 1  # the last choice: no object of this colour
        self.where = nn.Conv2d(2 * w, len(PAIRS), 1)  # evidence for each pair at each place
        flat = 2 * w * (IMAGE_SIZE // 4) ** 2
        self.heads = nn.Linear(flat, len(world.COLORS) + len(world.SIZES) + len(world.POSITIONS))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"the judge reads images of shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")
        features = self.body(images)
        pairs = self.where(features).amax((2, 3)).reshape(len(images), len(world.COLORS), len(world.SHAPES))
        out = self.heads(features.flatten(1)).split([len(world.COLORS), len(world.SIZES), len(world.POSITIONS)], 1)
        return {"colors": torch.cat([pairs, out[0][..., None]], 2), "size": out[1], "position": out[2]}

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self(batch["image"])
        single = batch["objects"] == 1
        pairs = batch["pairs"].reshape(len(single), len(world.COLORS), len(world.SHAPES))
        absent = pairs.sum(2, keepdim=True) == 0
        target = torch.cat([pairs, absent.to(pairs.dtype)], 2).argmax(2)  # (B, 8) shape index or 'none'
        terms = F.cross_entropy(out["colors"].flatten(0, 1), target.flatten())
        for name in ("size", "position"):
            terms = terms + F.cross_entropy(out[name][single], batch[name][single])
        return {"loss": terms}

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the images show: 'pairs' (B, 48) bool over ``PAIRS``, 'objects' (how many),
        and per image the 'color' and 'shape' of the most certain object, the 'size' and
        'position' indices."""
        was_training = self.training
        self.eval()
        out = self(images.to(next(self.parameters()).device))
        self.train(was_training)
        choice = out["colors"].argmax(2)  # (B, 8)
        present = choice < len(world.SHAPES)
        pairs = torch.zeros(len(choice), len(world.COLORS), len(world.SHAPES), dtype=torch.bool, device=choice.device)
        pairs.scatter_(2, choice.clamp(max=len(world.SHAPES) - 1)[..., None], present[..., None])
        color = out["colors"].softmax(2)[..., -1].argmin(1)  # the colour least likely absent
        shape = out["colors"][torch.arange(len(choice)), color, :-1].argmax(1)
        return {"pairs": pairs.flatten(1), "objects": present.sum(1), "color": color, "shape": shape,
                "size": out["size"].argmax(1), "position": out["position"].argmax(1)}


def judge_accuracy(judge: Judge, data: WorldDataset) -> dict[str, float]:
    """The judge on rendered images: per attribute of one-object scenes; 'pairs', the fraction
    of all scenes whose set of colour-shape pairs is read exactly; 'all', both."""
    read = judge.read(data.images.float() / 255)
    truth = {k: v.to(read["color"].device) for k, v in data.labels.items()}
    single = truth["objects"] == 1
    scores = {name: (read[name][single] == truth[name][single]).float().mean().item()
              for name in ("color", "shape", "size", "position")}
    exact = (read["pairs"] == truth["pairs"].bool()).all(1)
    scores["pairs"] = exact.float().mean().item()
    right = exact & torch.where(single, (read["size"] == truth["size"]) & (read["position"] == truth["position"]),
                                torch.ones_like(exact))
    scores["all"] = right.float().mean().item()
    return scores


def faithfulness(judge: Judge, images: torch.Tensor, texts: Sequence[str]) -> dict[str, float]:
    """How often images show what their prompts ask for, read by the judge: 'faithful' (every
    asked attribute right and nothing else drawn: the set of colour-shape pairs must equal the
    prompt's), and the accuracy of each asked attribute of one-object prompts."""
    if len(images) != len(texts) or not len(texts):
        raise ValueError(f"need one prompt per image, got {len(images)} images and {len(texts)} prompts")
    read = {k: v.cpu() for k, v in judge.read(images).items()}
    asked = [parse_prompt(t) for t in texts]
    right, per = [], {"color": [], "shape": [], "size": [], "position": []}
    for i, objects in enumerate(asked):
        want = torch.zeros(len(PAIRS), dtype=torch.bool)
        for o in objects:
            want[PAIRS.index((o["color"], o["shape"]))] = True
        ok = bool((read["pairs"][i] == want).all())
        if len(objects) == 1:
            o = objects[0]
            got = {"color": world.COLORS[read["color"][i]], "shape": world.SHAPES[read["shape"][i]],
                   "size": world.SIZES[read["size"][i]], "position": world.POSITIONS[read["position"][i]]}
            for name in per:
                if o[name] is not None:
                    per[name].append(got[name] == o[name])
                    ok &= got[name] == o[name]
        right.append(ok)
    scores = {"faithful": float(np.mean(right))}
    scores.update({name: float(np.mean(v)) for name, v in per.items() if v})
    return scores


def diversity(judge: Judge, images: torch.Tensor, groups: Sequence) -> float:
    """How varied the images of one prompt are where the prompt leaves size and position free:
    the probability that two images of the same group (same prompt) differ in the judged size
    or position (Gini-Simpson index), averaged over groups. 0 = always the same picture."""
    read = judge.read(images)
    cell = (read["size"] * len(world.POSITIONS) + read["position"]).cpu().numpy()
    groups = np.asarray(groups)
    if len(groups) != len(cell):
        raise ValueError(f"need one group label per image, got {len(groups)} for {len(cell)} images")
    values = []
    for g in np.unique(groups):
        members = cell[groups == g]
        if len(members) < 2:
            raise ValueError(f"group {g!r} has one image: diversity needs at least two per prompt")
        _, counts = np.unique(members, return_counts=True)
        n = len(members)
        values.append(1 - (counts * (counts - 1)).sum() / (n * (n - 1)))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------
# Closing the loop: the book's other models read the generated images
# ---------------------------------------------------------------------------------------------

def upsample(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Images scaled to ``size`` pixels by repeating pixels (nearest neighbour), so that the
    book's 32-pixel readers (chapter 4's CLIP, chapter 7b's describer) can read 16-pixel ones.
    Repeated pixels keep the hard edges of the renders those readers learned from."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    return F.interpolate(images, size=size, mode="nearest")


def asked_pairs(texts: Sequence[str]) -> list[set]:
    """The set of (colour, shape) pairs each prompt asks for."""
    return [{(o["color"], o["shape"]) for o in parse_prompt(t)} for t in texts]


def judged_as_asked(judge: Judge, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Per image, whether the judge finds exactly the prompt's objects (colour and shape; size
    and position aside): the judge's verdict on the question the other readers answer."""
    if len(images) != len(texts) or not len(texts):
        raise ValueError(f"need one prompt per image, got {len(images)} images and {len(texts)} prompts")
    read = judge.read(images)["pairs"].cpu()
    return torch.tensor([{PAIRS[j] for j in row.nonzero().flatten().tolist()} == want
                         for row, want in zip(read, asked_pairs(texts))])


def described_as_asked(describer, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """Image -> text: ask ``describer`` (chapter 7b's model) what is in each image (upsampled to
    32 pixels) and read its answer back. Returns, per image, whether the description names
    exactly the prompt's objects (colour and shape), and the descriptions."""
    from mmlib.vlm import DESCRIBE, mentioned

    if len(images) != len(texts) or not len(texts):
        raise ValueError(f"need one prompt per image, got {len(images)} images and {len(texts)} prompts")
    said = describer.answer(upsample(images), [DESCRIBE] * len(texts), max_new=24)
    right = [set(mentioned(d)) == want for d, want in zip(said, asked_pairs(texts))]
    return torch.tensor(right), said


def clip_reading(clip, images: torch.Tensor, texts: Sequence[str], k: int = 3) -> dict:
    """Chapter 4's CLIP on one-object images (upsampled to 32 pixels), both ways.
    'named': per image, whether zero-shot classification among all 48 pairs picks the prompt's
    pair (image -> text). 'retrieved': for each pair the prompts ask for, the share of the ``k``
    images CLIP ranks first for that pair's text that were drawn for it (text -> image),
    averaged over pairs."""
    from mmlib.pretrain import zero_shot_scores

    asked = [next(iter(p)) if len(p) == 1 else None for p in asked_pairs(texts)]
    if len(images) != len(texts) or not texts or None in asked:
        raise ValueError("clip_reading needs one one-object prompt per image ('a red circle')")
    scores = zero_shot_scores(clip, upsample(images), PAIRS, Tokenizer.for_world()).cpu()
    index = torch.tensor([PAIRS.index(p) for p in asked])
    precision = [(index[scores[:, q].topk(k).indices] == q).float().mean() for q in index.unique()]
    return {"named": scores.argmax(1) == index, "retrieved": torch.stack(precision).mean().item()}


__all__ = ["IMAGE_SIZE", "PAIRS", "MARGIN", "OBJECTIVES", "clear_scenes", "mixed_scenes", "prompt_for", "prompts", "parse_prompt",
           "generation_data", "flow_path", "flow_matching_loss", "velocity_from_data", "flow_data_loss", "TARGETS", "DDPMSchedule", "ddpm_noised", "ddpm_loss", "guide",
           "euler", "ddim", "time_embedding", "FiLMBlock", "CrossAttention", "UNet", "TextToImage",
           "generate_images", "judge_data", "Judge", "judge_accuracy", "faithfulness", "diversity",
           "upsample", "asked_pairs", "judged_as_asked", "described_as_asked", "clip_reading"]
