"""Evaluation of joint embeddings (chapter 4): retrieval, zero-shot classification, linear probes,
the modality gap."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.nn import functional as F


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is the label."""
    if len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as rows (and at least one): got {len(logits)} and {len(labels)}")
    return (logits.argmax(-1) == labels).float().mean().item()


def recall_at_k(similarity: torch.Tensor, k: int) -> float:
    """Fraction of queries (rows) whose true partner (the diagonal) is among the k most similar
    columns. Use ``similarity.T`` for the other direction (text -> image)."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"expected a square similarity matrix (queries x gallery), got {tuple(similarity.shape)}")
    if not isinstance(k, int) or not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be an integer from 1 to the gallery size {similarity.shape[1]}, got {k!r}")
    top = similarity.topk(k, dim=1).indices
    truth = torch.arange(len(similarity), device=similarity.device)[:, None]
    return (top == truth).any(1).float().mean().item()


def class_embeddings(embed_texts: Callable[[Sequence[str]], torch.Tensor], class_names: Sequence[str],
                     templates: Sequence[str] = ("{}",)) -> torch.Tensor:
    """Zero-shot classifier weights: for each class, embed every template filled with its name,
    average the normalised embeddings, renormalise (prompt ensembling, CLIP §3.1.4). (C, D)."""
    if not class_names or not templates:
        raise ValueError("need at least one class name and one template")
    if any("{}" not in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' where the class name goes, got {list(templates)}")
    rows = []
    for name in class_names:
        emb = F.normalize(embed_texts([t.format(name) for t in templates]), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def zero_shot_logits(image_emb: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each image to each class embedding: (N, C)."""
    if image_emb.dim() != 2 or classes.dim() != 2 or image_emb.shape[1] != classes.shape[1]:
        raise ValueError(f"expected image embeddings (N, D) and class embeddings (C, D), got "
                         f"{tuple(image_emb.shape)} and {tuple(classes.shape)}")
    return F.normalize(image_emb, dim=-1) @ F.normalize(classes, dim=-1).T


def modality_gap(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Distance between the centres of the normalised image and text embeddings (Liang et al. 2022)."""
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    centre_i = F.normalize(image_emb, dim=-1).mean(0)
    centre_t = F.normalize(text_emb, dim=-1).mean(0)
    return (centre_i - centre_t).norm().item()


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, n_classes: int, l2: float = 1e-3,
                 steps: int = 100) -> torch.nn.Linear:
    """Logistic regression on frozen features, fitted with L-BFGS. Returns the fitted layer."""
    if train_x.dim() != 2 or len(train_x) != len(train_y) or len(train_y) == 0:
        raise ValueError(f"expected features (N, D) with N labels, got {tuple(train_x.shape)} and {len(train_y)} labels")
    train_x = train_x.detach()
    probe = torch.nn.Linear(train_x.shape[1], n_classes).to(train_x.device)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(train_x), train_y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe.requires_grad_(False)


__all__ = ["accuracy", "recall_at_k", "class_embeddings", "zero_shot_logits", "modality_gap", "linear_probe"]
