"""The fusion layer (融合层): seven ways to combine per-modality features, one interface.

Every fusion module maps a list of per-modality ``Features`` (see ``mmlib.encoders``; a plain
``(B, d)`` tensor is accepted too, and ``None`` marks a missing modality) to one tensor
``(B, out_dim)``. Chapter 3 compares them on one task. Formulas and sources:

===========  ===================================================================================
concat       h = MLP([x_1; x_2; ...])                                    (early fusion)
late         p = mean_m softmax(g_m(x_m)); returns log p                 (decision averaging)
gmu          h = z * tanh(W_1 x_1) + (1 - z) * tanh(W_2 x_2), z = sigmoid(W_z [x_1; x_2])  Arevalo 2017
tensor       z = [1; z_1] (x) [1; z_2] (x) ... -> Linear                Zadeh et al. 2017 (TFN)
lowrank      h = prod_m (sum_i W_m^(i) [1; z_m]) summed over rank       Liu et al. 2018 (LMF)
film         F' = gamma(c) * F + beta(c), F = image tokens, c = the others  Perez et al. 2018
xattn        each modality's tokens attend to the others' (co-attention)  ViLBERT, LXMERT
===========  ===================================================================================
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmlib.encoders import Features, masked_mean

FUSIONS = ("concat", "late", "gmu", "tensor", "lowrank", "film", "xattn")


def _as_features(x) -> Features | None:
    if x is None or isinstance(x, Features):
        return x
    if isinstance(x, torch.Tensor) and x.dim() == 2:
        return Features(x, x[:, None], torch.ones(len(x), 1, dtype=torch.bool, device=x.device))
    raise ValueError(f"fusion takes Features or (B, d) tensors, got {getattr(x, 'shape', type(x).__name__)}")


class Fusion(nn.Module):
    """Base class: checks the inputs, then calls ``fuse`` with a list of Features (None = missing)."""

    produces_logits = False  # True when the output is already a class score (late fusion)

    def __init__(self, dims: Sequence[int], out_dim: int):
        super().__init__()
        dims = list(dims)
        if len(dims) < 2:
            raise ValueError(f"fusion combines at least two modalities, got dims={dims}")
        if any(not isinstance(d, int) or d <= 0 for d in dims) or out_dim <= 0:
            raise ValueError(f"feature sizes must be positive integers, got dims={dims}, out_dim={out_dim}")
        self.dims, self.out_dim = dims, out_dim

    def forward(self, features: Sequence) -> torch.Tensor:
        if not isinstance(features, (list, tuple)) or len(features) != len(self.dims):
            raise ValueError(f"{type(self).__name__} expects a list of {len(self.dims)} modalities' features "
                             f"(sizes {self.dims}), got {len(features) if isinstance(features, (list, tuple)) else type(features).__name__}")
        feats = [_as_features(f) for f in features]
        present = [f for f in feats if f is not None]
        if not present:
            raise ValueError("every modality is missing: give at least one")
        batch = len(present[0].pooled)
        for m, (f, d) in enumerate(zip(feats, self.dims)):
            if f is not None and (f.pooled.shape != (batch, d) or f.tokens.shape[0] != batch or f.tokens.shape[-1] != d):
                raise ValueError(f"modality {m}: expected features of shape ({batch}, {d}) and tokens (B, n, {d}), "
                                 f"got {tuple(f.pooled.shape)} and {tuple(f.tokens.shape)}")
        return self.fuse(feats)

    def fuse(self, feats: list[Features | None]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def pooled_or_zeros(feats: list[Features | None], dims: list[int]) -> list[torch.Tensor]:
        """Each modality's pooled features; zeros stand in for a missing one."""
        ref = next(f.pooled for f in feats if f is not None)
        return [f.pooled if f is not None else ref.new_zeros(len(ref), d) for f, d in zip(feats, dims)]


def _mlp(d_in: int, d_out: int, hidden: int | None = None) -> nn.Sequential:
    hidden = hidden or d_out
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class ConcatFusion(Fusion):
    """Early fusion: concatenate the pooled features and mix them with an MLP."""

    def __init__(self, dims, out_dim):
        super().__init__(dims, out_dim)
        self.mlp = _mlp(sum(self.dims), out_dim)

    def fuse(self, feats):
        return torch.relu(self.mlp(torch.cat(self.pooled_or_zeros(feats, self.dims), dim=1)))


class LateFusion(Fusion):
    """Decision-level fusion: each modality predicts on its own; the class probabilities are averaged
    over the modalities present. Returns log-probabilities (so the output layer is the identity)."""

    produces_logits = True

    def __init__(self, dims, out_dim):
        super().__init__(dims, out_dim)
        self.heads = nn.ModuleList(_mlp(d, out_dim) for d in self.dims)

    def fuse(self, feats):
        probs = [head(f.pooled).softmax(-1) for head, f in zip(self.heads, feats) if f is not None]
        return torch.stack(probs).mean(0).clamp_min(1e-8).log()


class GatedFusion(Fusion):
    """Gated multimodal unit (GMU, Arevalo et al. 2017): per dimension, a learned gate decides
    how much of each modality's projection to let through.

    h_m = tanh(W_m x_m);  z = sigmoid(W_z [x_1; ...; x_M])
    two modalities:   h = z * h_1 + (1 - z) * h_2          (z has one entry per dimension)
    M modalities:     h = sum_m z_m * h_m                  (the paper's extension: one gate each)

    A missing modality's gate is closed (its z is 0; with two, the other one's is 1).
    """

    def __init__(self, dims, out_dim):
        super().__init__(dims, out_dim)
        self.proj = nn.ModuleList(nn.Linear(d, out_dim) for d in self.dims)
        n_gates = 1 if len(self.dims) == 2 else len(self.dims)
        self.gate = nn.Linear(sum(self.dims), n_gates * out_dim)
        self.last_gate: torch.Tensor | None = None  # (B, M, out): each modality's share

    def fuse(self, feats):
        pooled = self.pooled_or_zeros(feats, self.dims)
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.proj, pooled)], dim=1)  # (B, M, out)
        z = torch.sigmoid(self.gate(torch.cat(pooled, dim=1))).view(len(h), -1, self.out_dim)
        if len(self.dims) == 2:
            z = torch.cat([z, 1 - z], dim=1)  # (B, 2, out): z and 1 - z
        present = torch.tensor([f is not None for f in feats], device=z.device)
        z = z * present.view(1, -1, 1)
        if len(self.dims) == 2 and not present.all():
            z = present.view(1, -1, 1).float().expand_as(z)  # only one modality: take it whole
        self.last_gate = z.detach()
        return (z * h).sum(1)


class TensorFusion(Fusion):
    """Tensor fusion (TFN): the outer product of [1; z_m] keeps uni-, bi- and tri-modal terms.
    Each modality is first projected to ``proj`` dims, so the product has (proj + 1)^M entries."""

    def __init__(self, dims, out_dim, proj: int = 16):
        super().__init__(dims, out_dim)
        self.proj = nn.ModuleList(nn.Linear(d, proj) for d in self.dims)
        self.out = nn.Sequential(nn.Linear((proj + 1) ** len(self.dims), out_dim), nn.ReLU())

    def fuse(self, feats):
        pooled = self.pooled_or_zeros(feats, self.dims)
        z = None
        for p, x, f in zip(self.proj, pooled, feats):
            zm = torch.relu(p(x)) if f is not None else x.new_zeros(len(x), p.out_features)
            zm = torch.cat([torch.ones_like(zm[:, :1]), zm], dim=1)  # [1; z_m]
            z = zm if z is None else (z.unsqueeze(-1) * zm.unsqueeze(1)).flatten(1)
        return self.out(z)


class LowRankFusion(Fusion):
    """Low-rank multimodal fusion (LMF): TFN's weight tensor as a sum of ``rank`` products of
    per-modality factors, at linear cost. Factors live in an ``nn.ParameterList`` so they train."""

    def __init__(self, dims, out_dim, rank: int = 8):
        super().__init__(dims, out_dim)
        self.factors = nn.ParameterList(nn.Parameter(torch.randn(rank, d + 1, out_dim) * (d + 1) ** -0.5)
                                        for d in self.dims)
        self.rank_weights = nn.Parameter(torch.ones(1, rank) / rank)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def fuse(self, feats):
        pooled = self.pooled_or_zeros(feats, self.dims)
        product = None
        for factor, x in zip(self.factors, pooled):
            x1 = torch.cat([torch.ones_like(x[:, :1]), x], dim=1)  # [1; z_m]  (B, d + 1)
            term = torch.einsum("bd,rdo->bro", x1, factor)  # (B, rank, out)
            product = term if product is None else product * term
        return torch.relu(torch.einsum("br,bro->bo", self.rank_weights.expand(len(product), -1), product) + self.bias)


class FiLMFusion(Fusion):
    """FiLM: the other modalities produce a per-channel scale and shift (gamma, beta) that modulate
    every token of the first modality (the image), which is then pooled."""

    def __init__(self, dims, out_dim):
        super().__init__(dims, out_dim)
        self.film = nn.Linear(sum(self.dims[1:]), 2 * self.dims[0])
        self.mix = nn.Sequential(nn.Linear(self.dims[0], self.dims[0]), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(self.dims[0], out_dim), nn.ReLU())

    def fuse(self, feats):
        condition = torch.cat(self.pooled_or_zeros(feats[1:], self.dims[1:]), dim=1) if any(
            f is not None for f in feats[1:]) else None
        image = feats[0]
        if image is None:  # no tokens to modulate: fall back on the conditioning alone
            ref = next(f.pooled for f in feats if f is not None)
            tokens = ref.new_zeros(len(ref), 1, self.dims[0])
            mask = torch.ones(len(ref), 1, dtype=torch.bool, device=ref.device)
        else:
            tokens, mask = image.tokens, image.mask
        if condition is not None:
            gamma, beta = self.film(condition).chunk(2, dim=-1)  # (B, d0) each
            tokens = (1 + gamma).unsqueeze(1) * tokens + beta.unsqueeze(1)
        return self.out(masked_mean(self.mix(tokens), mask))


class CrossAttentionFusion(Fusion):
    """Co-attention: each modality's tokens attend to the tokens of all the others (two-stream, as in
    ViLBERT/LXMERT); the attended tokens are pooled and concatenated."""

    def __init__(self, dims, out_dim, heads: int = 4):
        super().__init__(dims, out_dim)
        width = max(self.dims)
        if width % heads:
            raise ValueError(f"the widest feature size {width} must be divisible by heads={heads}")
        self.width = width
        self.inp = nn.ModuleList(nn.Linear(d, width) for d in self.dims)
        self.attn = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True) for _ in self.dims)
        self.norm = nn.ModuleList(nn.LayerNorm(width) for _ in self.dims)
        self.out = nn.Sequential(nn.Linear(width * len(self.dims), out_dim), nn.ReLU())
        self.last_attention: dict[int, torch.Tensor] = {}  # modality -> (B, n_query, n_keys) weights

    def fuse(self, feats):
        tokens = [proj(f.tokens) if f is not None else None for proj, f in zip(self.inp, feats)]
        pooled, ref = [], next(t for t in tokens if t is not None)
        self.last_attention = {}
        for m, (f, t) in enumerate(zip(feats, tokens)):
            if f is None:
                pooled.append(ref.new_zeros(len(ref), self.width))
                continue
            others = [(tokens[o], feats[o].mask) for o in range(len(feats)) if o != m and feats[o] is not None]
            if others:
                keys = torch.cat([k for k, _ in others], dim=1)
                key_mask = torch.cat([k for _, k in others], dim=1)
                attended, weights = self.attn[m](t, keys, keys, key_padding_mask=~key_mask)
                self.last_attention[m] = weights.detach()
                t = self.norm[m](t + attended)
            pooled.append(masked_mean(t, f.mask))
        return self.out(torch.cat(pooled, dim=1))


class SingleStreamFusion(Fusion):
    """Single-stream joint encoding (VisualBERT, UNITER): every modality's tokens, tagged with a
    learned modality embedding, go through one Transformer together; the output is pooled."""

    def __init__(self, dims, out_dim, heads: int = 4, depth: int = 1):
        super().__init__(dims, out_dim)
        width = max(self.dims)
        if width % heads:
            raise ValueError(f"the widest feature size {width} must be divisible by heads={heads}")
        self.inp = nn.ModuleList(nn.Linear(d, width) for d in self.dims)
        self.modality = nn.Parameter(torch.randn(len(self.dims), width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.Linear(width, out_dim), nn.ReLU())

    def fuse(self, feats):
        present = [(m, f) for m, f in enumerate(feats) if f is not None]
        tokens = torch.cat([self.inp[m](f.tokens) + self.modality[m] for m, f in present], dim=1)
        mask = torch.cat([f.mask for _, f in present], dim=1)
        joint = self.encoder(tokens, src_key_padding_mask=~mask)
        return self.out(masked_mean(joint, mask))


JOINT_ENCODERS = ("single", "xattn")
"""Transformer-style joint encoding: single-stream (one sequence) and two-stream (cross-attention)."""


def make_fusion(name: str, dims: Sequence[int], out_dim: int, **options) -> Fusion:
    """A fusion module by name: one of ``FUSIONS``, or 'single' (single-stream joint encoding)."""
    classes = {"concat": ConcatFusion, "late": LateFusion, "gmu": GatedFusion, "tensor": TensorFusion,
               "lowrank": LowRankFusion, "film": FiLMFusion, "xattn": CrossAttentionFusion,
               "single": SingleStreamFusion}
    if name not in classes:
        raise ValueError(f"unknown fusion {name!r}: expected one of {FUSIONS + ('single',)}")
    return classes[name](dims, out_dim, **options)


__all__ = ["FUSIONS", "Fusion", "ConcatFusion", "LateFusion", "GatedFusion", "TensorFusion", "LowRankFusion",
           "FiLMFusion", "CrossAttentionFusion", "SingleStreamFusion", "JOINT_ENCODERS", "make_fusion"]
