"""The book's other models read generated images (chapter 8 closes the loop): chapter 7b's
describer writes what it sees (image -> text) and chapter 4's CLIP names and retrieves them
(image -> text, text -> image), beside the judge trained for the purpose.

A module of its own, above both the vision-language model and the generator, so that neither
of those depends on the other.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from mmlib import world
from mmlib.generate import asked_pairs
from mmlib.text import Tokenizer
from mmlib.vlm import DESCRIBE, mentioned
from mmlib.zeroshot import zero_shot_scores


def upsample(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Images scaled to ``size`` pixels by repeating pixels (nearest neighbour), so that the
    book's 32-pixel readers (chapter 4's CLIP, chapter 7b's describer) can read 16-pixel ones.
    Repeated pixels keep the hard edges of the renders those readers learned from."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    return F.interpolate(images, size=size, mode="nearest")


def described_as_asked(describer, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """Image -> text: ask ``describer`` (chapter 7b's model) what is in each image (upsampled to
    32 pixels) and read its answer back. Returns, per image, whether the description names
    exactly the prompt's objects (colour and shape), and the descriptions."""
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
    asked = [next(iter(p)) if len(p) == 1 else None for p in asked_pairs(texts)]
    if len(images) != len(texts) or not texts or None in asked:
        raise ValueError("clip_reading needs one one-object prompt per image ('a red circle')")
    scores = zero_shot_scores(clip, upsample(images), world.PAIRS, Tokenizer.for_world()).cpu()
    index = torch.tensor([world.PAIRS.index(p) for p in asked])
    precision = [(index[scores[:, q].topk(k).indices] == q).float().mean() for q in index.unique()]
    return {"named": scores.argmax(1) == index, "retrieved": torch.stack(precision).mean().item()}


__all__ = ["upsample", "described_as_asked", "clip_reading"]
