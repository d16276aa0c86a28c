"""Pretraining from image-caption pairs, and zero-shot evaluation (source article §2.3; chapter 4).

``pretrain`` trains a model on a pairs dataset with one of three objectives, all with the same
image tower so that only the objective differs (CLIP's Fig. 2 comparison):

- ``'contrastive'``: a ``DualEncoder`` with the CLIP (InfoNCE) or SigLIP loss;
- ``'bag_of_words'``: a ``BagOfWordsModel`` predicts the caption's words from the image;
- ``'captioning'``: a ``CaptioningModel`` writes the caption word by word, seeing the image at
  every step.

Each can then classify images *zero-shot* into colour-shape classes from text prompts alone:
``zero_shot_scores``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from mmlib import objectives, world
from mmlib.encoders import Encoder
from mmlib.models import DualEncoder
from mmlib.text import Tokenizer

PROMPT_TEMPLATES = tuple(f"a {size} {{}} {where}" for size in world.SIZES
                         for where in ("in the centre", "on the left", "on the right", "at the top", "at the bottom",
                                       "in the top left", "in the top right", "in the bottom left",
                                       "in the bottom right"))
"""Prompt templates for zero-shot classification; '{}' becomes e.g. 'red circle'. Like CLIP's
per-dataset prompts, they say what captions in this world say: every size and position (18)."""

CHINESE_PROMPT_TEMPLATES = tuple(f"一个{world.ZH_SIZES[size]}的{{}}在{world.ZH_POSITIONS[where]}"
                                 for size in world.SIZES for where in world.POSITIONS)
"""The same 18 prompts in Chinese, worded as ``world.chinese_captions`` words them: '一个小的{}在左边'."""


class BagOfWordsModel(nn.Module):
    """Image tower -> scores over the vocabulary: which words will the caption contain?"""

    def __init__(self, image_encoder: Encoder, vocab_size: int):
        super().__init__()
        self.image_encoder = image_encoder
        self.head = nn.Linear(image_encoder.dim, vocab_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_encoder(images))  # (B, V)


class CaptioningModel(nn.Module):
    """Image tower + a GRU decoder that sees the image embedding at every step (concatenated to each
    word embedding), so that it cannot learn to ignore the image after the first word."""

    def __init__(self, image_encoder: Encoder, vocab_size: int, dim: int = 64):
        super().__init__()
        self.image_encoder = image_encoder
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.image_proj = nn.Linear(image_encoder.dim, dim)
        self.gru = nn.GRU(2 * dim, dim, batch_first=True)
        self.out = nn.Linear(dim, vocab_size)

    def image_state(self, images: torch.Tensor) -> torch.Tensor:
        """The image as the decoder sees it: (B, dim). Compute once, reuse for many captions."""
        return self.image_proj(self.image_encoder(images))

    def forward(self, images: torch.Tensor, inputs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for input tokens (B, T) (which start with <bos>)."""
        image = self.image_state(images) if image is None else image  # (B, dim)
        words = self.embed(inputs)
        steps = torch.cat([words, image[:, None].expand(-1, inputs.shape[1], -1)], dim=-1)
        hidden, _ = self.gru(steps, image[None].contiguous())
        return self.out(hidden)

    @staticmethod
    def shift(tokens: torch.Tensor, bos_id: int = 2, eos_id: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: inputs are <bos> + caption, targets are caption + <eos> (padding stays 0)."""
        lengths = (tokens != 0).sum(1)
        inputs = torch.cat([torch.full_like(tokens[:, :1], bos_id), tokens], dim=1)
        targets = torch.cat([tokens, torch.zeros_like(tokens[:, :1])], dim=1)
        targets[torch.arange(len(tokens)), lengths] = eos_id
        return inputs, targets

    def log_likelihood(self, images: torch.Tensor, tokens: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """log p(caption | image) for each pair, summed over the caption's tokens and <eos>: (B,).
        Pass ``image`` (from ``image_state``) to skip the image tower."""
        inputs, targets = self.shift(tokens)
        logp = self(images, inputs, image).log_softmax(-1)
        picked = logp.gather(2, targets[..., None])[..., 0]
        return (picked * (targets != 0)).sum(1)


OBJECTIVES = ("contrastive", "bag_of_words", "captioning")


def make_pretraining_model(objective: str, image_encoder: Encoder, tokenizer: Tokenizer,
                           text_encoder: Encoder | None = None, embed_dim: int = 64, **options) -> nn.Module:
    """The model for an objective, around the given image tower."""
    if objective == "contrastive":
        if text_encoder is None:
            raise ValueError("the contrastive objective needs a text_encoder (the second tower)")
        return DualEncoder(image_encoder, text_encoder, embed_dim=embed_dim, **options)
    if objective == "bag_of_words":
        return BagOfWordsModel(image_encoder, len(tokenizer))
    if objective == "captioning":
        return CaptioningModel(image_encoder, len(tokenizer), **options)
    raise ValueError(f"unknown objective {objective!r}: expected one of {OBJECTIVES}")


def objective_loss(model: nn.Module, batch: dict, loss: str = "clip") -> torch.Tensor:
    """The training loss of ``model`` on a batch of image-caption pairs."""
    if isinstance(model, DualEncoder):
        image_emb, text_emb = model(batch)
        if loss == "clip":
            return objectives.clip_loss(image_emb, text_emb, model.scale)
        if loss == "siglip":
            return objectives.siglip_loss(image_emb, text_emb, model.scale, model.bias)
        raise ValueError(f"unknown contrastive loss {loss!r}: expected 'clip' or 'siglip'")
    if isinstance(model, BagOfWordsModel):
        return objectives.bag_of_words_loss(model(batch["image"]), batch["tokens"])
    if isinstance(model, CaptioningModel):
        inputs, targets = model.shift(batch["tokens"])
        return objectives.captioning_loss(model(batch["image"], inputs), targets)
    raise ValueError(f"no pretraining objective for a {type(model).__name__}")


@dataclass
class PretrainHistory:
    """Loss per step, and evaluations (images seen -> value) made during pretraining."""

    loss: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def pretrain(model: nn.Module, data, *, epochs: int = 5, batch_size: int = 256, lr: float = 3e-3,
             loss: str = "clip", device=None, seed: int = 0, evaluate: Callable[[nn.Module], float] | None = None,
             eval_every: int | None = None, progress: bool = True, desc: str = "pretraining") -> PretrainHistory:
    """Train ``model`` on a pairs dataset (AdamW, one-cycle schedule). ``evaluate(model)`` is called
    every ``eval_every`` steps and at the end; its results are kept against the images seen."""
    from tqdm.auto import tqdm

    from mmlib.train import default_device

    if data.tokens is None:
        raise ValueError("pretraining needs image-caption pairs: make_dataset('pairs', ...)")
    if not isinstance(epochs, int) or epochs <= 0 or batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(data) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    history, seen, step = PretrainHistory(), 0, 0
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, mininterval=0.5)
    for epoch in range(epochs):
        for batch in data.batches(batch_size, shuffle=True, seed=seed * 1000 + epoch, device=device, drop_last=True):
            value = objective_loss(model, batch, loss)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if isinstance(model, DualEncoder):
                model.clamp_scale()
            history.loss.append(value.item())
            seen += len(batch["image"])
            step += 1
            bar.update()
            if evaluate is not None and eval_every and step % eval_every == 0 and step < steps:
                history.evals.append((seen, _evaluate(model, evaluate)))
    bar.close()
    history.seconds = time.perf_counter() - start
    if evaluate is not None:
        history.evals.append((seen, _evaluate(model, evaluate)))
    model.eval()
    return history


def _evaluate(model: nn.Module, evaluate: Callable[[nn.Module], float]) -> float:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        value = evaluate(model)
    model.train(was_training)
    return value


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
    from mmlib.metrics import class_embeddings, zero_shot_logits

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


if __name__ == "__main__":  # python -m mmlib.pretrain ...  (and torchrun -m mmlib.pretrain ...)
    from mmlib.distributed import main

    raise SystemExit(main())
