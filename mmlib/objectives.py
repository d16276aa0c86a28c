"""Pretraining objectives as plain functions of embeddings (source article §2.3; chapter 4).

Each is testable on random tensors. Formulas and constants (see the bibliography):

- ``clip_loss``: symmetric InfoNCE over the batch's similarity matrix (Radford et al. 2021, Fig. 3).
- ``siglip_loss``: a sigmoid on every pair, +1 on the diagonal and -1 elsewhere (Zhai et al. 2023).
- ``clip_loss_local`` / ``siglip_loss_local``: one process's rows of the global-batch loss
  (OpenCLIP's ``local_loss``): the same gradients, without the full logit matrix.
- ``itm_loss``: image-text matching with hard negatives drawn from the contrastive similarities
  (ALBEF, Li et al. 2021).
- ``bag_of_words_loss``: predict the caption's words from the image, order ignored.
- ``captioning_loss``: next-token cross-entropy of a decoder conditioned on the image.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

CLIP_INIT_SCALE = 1 / 0.07
"""CLIP initialises its learnable logit scale (inverse temperature) to 1/0.07 ..."""
CLIP_MAX_SCALE = 100.0
"""... and clips it at 100."""
SIGLIP_INIT_SCALE = 10.0
"""SigLIP starts its scale at 10 ..."""
SIGLIP_INIT_BIAS = -10.0
"""... and its learnable bias at -10, so that the many negative pairs start with a small loss."""


def _check_pair(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    for name, emb in (("image", image_emb), ("text", text_emb)):
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            raise ValueError(f"expected {name} embeddings of shape (batch, dim), got "
                             f"{tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings must pair up one to one: got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)} (the two towers must see the same batch and output "
                         "the same dimension)")
    if len(image_emb) == 0:
        raise ValueError("got an empty batch of embeddings")


def similarity_logits(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """scale * (normalised image) @ (normalised text)^T: (B, B), row i = image i against every text."""
    _check_pair(image_emb, text_emb)
    return scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T


def _scaled_cosines(a: torch.Tensor, b: torch.Tensor, scale) -> torch.Tensor:
    return scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def clip_loss(image_emb, text_emb, scale=CLIP_INIT_SCALE):
    """Symmetric InfoNCE: cross-entropy with the diagonal as targets,
    over rows (image -> text) and over columns (text -> image)."""
    logits = similarity_logits(image_emb, text_emb, scale)
    targets = torch.arange(len(logits), device=logits.device)
    rows = F.cross_entropy(logits, targets)
    columns = F.cross_entropy(logits.T, targets)
    return (rows + columns) / 2


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float = 10.0,
                bias: torch.Tensor | float = SIGLIP_INIT_BIAS) -> torch.Tensor:
    """-1/|B| sum_ij log sigmoid(z_ij (scale x_i.y_j + bias)), z = +1 on the diagonal, -1 elsewhere."""
    logits = similarity_logits(image_emb, text_emb, scale) + bias
    labels = 2 * torch.eye(len(logits), device=logits.device) - 1
    return -F.logsigmoid(labels * logits).sum() / len(logits)


def clip_loss_local(image_emb, text_emb, all_image, all_text, offset,
                    scale=CLIP_INIT_SCALE):
    """The CLIP loss of one process's rows (OpenCLIP's ``local_loss``).

    This process's b images against all N*b texts, and its b texts against
    all N*b images: two (b, N*b) logit matrices instead of one (N*b, N*b).
    Its partners sit at ``offset`` ... ``offset + b - 1`` of the gathered
    batch. The mean of this loss over the N processes is ``clip_loss`` of
    the whole batch, and so are the gradients (DDP averages them).
    """
    _check_pair(image_emb, text_emb)
    _check_pair(all_image, all_text)
    if not 0 <= offset <= len(all_image) - len(image_emb):
        raise ValueError(f"offset {offset} does not place {len(image_emb)} rows "
                         f"inside a gathered batch of {len(all_image)}")
    per_image = _scaled_cosines(image_emb, all_text, scale)  # (b, N*b)
    per_text = _scaled_cosines(text_emb, all_image, scale)  # (b, N*b)
    targets = offset + torch.arange(len(image_emb), device=image_emb.device)
    rows = F.cross_entropy(per_image, targets)
    columns = F.cross_entropy(per_text, targets)
    return (rows + columns) / 2


def siglip_loss_local(image_emb, all_text, offset, scale=10.0,
                      bias=SIGLIP_INIT_BIAS):
    """The SigLIP loss of one process's images against all N*b texts: a sum
    over pairs needs no softmax over a whole row, so each pair is counted by
    exactly one process. The mean over processes is ``siglip_loss``."""
    if image_emb.dim() != 2 or all_text.dim() != 2 or image_emb.shape[1] != all_text.shape[1]:
        raise ValueError(f"expected (b, D) images and (N*b, D) texts, got "
                         f"{tuple(image_emb.shape)} and {tuple(all_text.shape)}")
    if not 0 <= offset <= len(all_text) - len(image_emb):
        raise ValueError(f"offset {offset} does not place {len(image_emb)} rows "
                         f"inside a gathered batch of {len(all_text)}")
    logits = _scaled_cosines(image_emb, all_text, scale) + bias  # (b, N*b)
    labels = -torch.ones_like(logits)
    rows = torch.arange(len(image_emb), device=logits.device)
    labels[rows, offset + rows] = 1
    return -F.logsigmoid(labels * logits).sum() / len(image_emb)


def sample_hard_negatives(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row, one column index drawn with probability softmax(row) with the diagonal zeroed
    (a likely-but-wrong partner). logits: (B, B) with B >= 2."""
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1] or len(logits) < 2:
        raise ValueError(f"hard negatives need a square similarity matrix of at least 2 x 2, got {tuple(logits.shape)}")
    off_diagonal = 1 - torch.eye(len(logits), device=logits.device)
    weights = (logits.detach().float().softmax(-1) + 1e-12) * off_diagonal
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_loss(match_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of image-text matching scores (one logit per pair; label 1 = matching)."""
    if match_logits.shape != labels.shape:
        raise ValueError(f"one label per pair: got logits {tuple(match_logits.shape)} and labels {tuple(labels.shape)}")
    return F.binary_cross_entropy_with_logits(match_logits, labels.float())


def bag_of_words_targets(tokens: torch.Tensor, vocab_size: int, ignore: Sequence[int]) -> torch.Tensor:
    """(B, L) token ids -> (B, V) distribution over the caption's words; the ids in ``ignore``
    (the tokenizer's ``special_ids``: padding, <unk>, <bos>, <eos>) do not count."""
    counts = torch.zeros(len(tokens), vocab_size, device=tokens.device)
    counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=counts.dtype))
    counts[:, list(ignore)] = 0
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def bag_of_words_loss(word_logits: torch.Tensor, tokens: torch.Tensor, ignore: Sequence[int]) -> torch.Tensor:
    """Cross-entropy between predicted word scores (B, V) and the caption's bag of words (the ids
    in ``ignore`` left out)."""
    if word_logits.dim() != 2 or len(word_logits) != len(tokens):
        raise ValueError(f"expected word logits (B, V) for {len(tokens)} captions, got {tuple(word_logits.shape)}")
    targets = bag_of_words_targets(tokens, word_logits.shape[1], ignore)
    return -(targets * word_logits.log_softmax(-1)).sum(1).mean()


def captioning_loss(token_logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """-mean_t log p(w_t | w_<t, image): logits (B, T, V) against targets (B, T), padding ignored."""
    if token_logits.dim() != 3 or token_logits.shape[:2] != targets.shape:
        raise ValueError(f"expected logits (B, T, V) matching targets (B, T), got {tuple(token_logits.shape)} "
                         f"and {tuple(targets.shape)}")
    return F.cross_entropy(token_logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)


__all__ = ["CLIP_INIT_SCALE", "CLIP_MAX_SCALE", "SIGLIP_INIT_SCALE", "SIGLIP_INIT_BIAS", "similarity_logits",
           "clip_loss", "siglip_loss", "clip_loss_local", "siglip_loss_local", "sample_hard_negatives", "itm_loss",
           "bag_of_words_targets", "bag_of_words_loss", "captioning_loss"]
