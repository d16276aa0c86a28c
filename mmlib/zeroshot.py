"""Zero-shot classification (chapter 4, CLIP §3.1): a model trained on image-caption pairs names
the classes of images it was never trained to classify, from text alone: each class becomes
captions built from prompt templates, and an image takes the class whose captions score best.

Works for each pretraining objective (contrastive, bag of words, captioning) and, for the
contrastive model, in Chinese (chapter 5's locked-image tuning).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmlib import world
from mmlib.metrics import class_embeddings, zero_shot_logits
from mmlib.models import BagOfWordsModel, CaptioningModel, DualEncoder
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


def zero_shot_accuracy(model: nn.Module, data, pairs: Sequence[tuple[str, str]] = world.PAIRS,
                       tokenizer: Tokenizer | None = None, templates: Sequence[str] | None = None,
                       aggregate: str = "marginal", language: str = "en") -> float:
    """Accuracy of zero-shot classification of ``data``'s images into the (colour, shape) ``pairs``
    (default: all 48 of the world), their captions tokenized by ``tokenizer`` (default:
    ``data.tokenizer``)."""
    tokenizer = tokenizer or data.tokenizer
    index = {pair: i for i, pair in enumerate(pairs)}
    objs = [(world.COLORS[c], data.scenes.shapes[s]) for c, s in zip(data.scenes.color[:, 0], data.scenes.shape[:, 0])]
    missing = {o for o in objs if o not in index}
    if missing:
        raise ValueError(f"the images contain classes that are not among the candidates: {sorted(missing)[:3]}")
    labels = torch.tensor([index[o] for o in objs])
    scores = zero_shot_scores(model, data.images.float() / 255, pairs, tokenizer, templates, aggregate=aggregate,
                              language=language)
    return (scores.argmax(1).cpu() == labels).float().mean().item()


__all__ = ["PROMPT_TEMPLATES", "CHINESE_PROMPT_TEMPLATES", "class_names", "zero_shot_scores", "zero_shot_accuracy"]
