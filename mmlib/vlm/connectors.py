"""Connectors (chapter 7): how image features reach a language model. One interface: region
features (B, N, d) and the instruction's mean word embedding (B, D) -> visual tokens (B, M, D)
placed before the text.

``LinearConnector`` (LLaVA), ``MLPConnector`` (LLaVA-1.5), ``Resampler`` (m learned queries that
cross-attend to the grid: Perceiver / Q-Former, fewer tokens), ``InstructionResampler`` (the
book's own design, inspired by InstructBLIP: its queries are built from the instruction).
``CrossAttentionConnector`` is the other way to connect (Flamingo): no visual tokens, but a
gated cross-attention layer before every LM block whose tanh gate starts at 0, so the untrained
model is exactly the text-only LM.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

class Connector(nn.Module):
    """Image region features (B, N, d_image) [+ instruction (B, D)] -> visual tokens (B, M, D)."""

    uses_instruction = False

    def __init__(self, image_dim: int, dim: int):
        super().__init__()
        self.image_dim, self.dim = image_dim, dim

    def tokens_for(self, regions: int) -> int:  # pragma: no cover - abstract
        """How many visual tokens ``regions`` image regions become."""
        raise NotImplementedError


class LinearConnector(Connector):
    """LLaVA: one linear map per region; every region becomes a token. ``pool=2`` first merges
    each 2 x 2 block of the grid into one token (4x fewer tokens): ``merge="mean"`` averages the
    block's four feature vectors, ``merge="stack"`` concatenates them (a pixel shuffle, as
    nanoVLM cuts SigLIP's tokens: nothing lost, an input four times wider)."""

    def __init__(self, image_dim: int, dim: int, pool: int = 1, merge: str = "mean"):
        super().__init__(image_dim, dim)
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive integer, got {pool!r}")
        if merge not in ("mean", "stack"):
            raise ValueError(f"merge is 'mean' or 'stack', got {merge!r}")
        self.pool, self.merge = pool, merge
        self.width = image_dim * pool ** 2 if merge == "stack" else image_dim
        self.proj = nn.Sequential(nn.LayerNorm(self.width), nn.Linear(self.width, dim))

    def pooled(self, regions: torch.Tensor) -> torch.Tensor:
        """(B, g*g, d) -> (B, (g/pool)^2, width): each pool x pool block of
        the grid, averaged (width d) or stacked (width d * pool^2)."""
        if self.pool == 1:
            return regions
        b, n, d = regions.shape
        g = math.isqrt(n)
        if g * g != n or g % self.pool:
            raise ValueError(f"pool={self.pool} needs a square grid whose "
                             f"side it divides, got {n} regions")
        grid = regions.transpose(1, 2).reshape(b, d, g, g)
        if self.merge == "stack":
            grid = F.pixel_unshuffle(grid, self.pool)
        else:
            grid = F.avg_pool2d(grid, self.pool)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, regions, instruction=None):
        return self.proj(self.pooled(regions))

    def tokens_for(self, regions):
        return regions // self.pool ** 2


class MLPConnector(LinearConnector):
    """LLaVA-1.5: a two-layer MLP per region (``pool`` and ``merge`` as for
    ``LinearConnector``)."""

    def __init__(self, image_dim: int, dim: int, pool: int = 1, merge: str = "mean"):
        super().__init__(image_dim, dim, pool, merge)
        self.proj = nn.Sequential(nn.LayerNorm(self.width), nn.Linear(self.width, dim), nn.GELU(),
                                  nn.Linear(dim, dim))


class Resampler(Connector):
    """The resampler's idea at its smallest: ``m`` learned queries read the regions (with learned
    positions) through one single-head attention and an MLP, so the LM sees ``m`` tokens however
    large the grid. Flamingo's Perceiver resampler and BLIP-2's Q-Former stack several layers of
    multi-head attention, with self-attention among the queries; this one has none of that."""

    def __init__(self, image_dim: int, dim: int, m: int = 4, regions: int = 64):
        super().__init__(image_dim, dim)
        self.m = m
        self.queries = nn.Parameter(torch.randn(m, dim) * 0.1)
        self.norm = nn.LayerNorm(image_dim)
        self.keys, self.values = nn.Linear(image_dim, dim), nn.Linear(image_dim, dim)
        self.positions = nn.Parameter(torch.zeros(regions, dim))
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def queries_for(self, instruction: torch.Tensor | None, batch: int) -> torch.Tensor:
        return self.queries[None].expand(batch, -1, -1)  # (B, m, D)

    def attend(self, regions, instruction):
        x = self.norm(regions)
        q = self.queries_for(instruction, len(x))
        logits = torch.einsum("bmd,bnd->bmn", q, self.keys(x) + self.positions) / math.sqrt(self.dim)
        return q, logits, torch.einsum("bmn,bnd->bmd", logits.softmax(-1), self.values(x))

    def forward(self, regions, instruction=None):
        _, _, read = self.attend(regions, instruction)
        return self.out(read)

    def tokens_for(self, regions):
        return self.m


class InstructionResampler(Resampler):
    """The book's own design, inspired by InstructBLIP: the queries are built from the
    instruction (its mean word embedding through an MLP, varied by ``m`` learned multipliers), so
    they look for what the question asks about. (InstructBLIP keeps learned queries and lets the
    instruction's tokens meet them in the Q-Former's self-attention.) Each token holds
    what a query read, its product with the query (how well it matched) and the best match
    score, plus the mean of all regions (for counting)."""

    uses_instruction = True

    def __init__(self, image_dim: int, dim: int, m: int = 4, regions: int = 64):
        super().__init__(image_dim, dim, m, regions)
        self.ask = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.whole = nn.Linear(image_dim, dim)
        self.out = nn.Sequential(nn.Linear(3 * dim + 1, dim), nn.GELU(), nn.Linear(dim, dim))

    def queries_for(self, instruction, batch):
        if instruction is None:
            raise ValueError("an InstructionResampler needs the instruction's embedding")
        return self.ask(instruction)[:, None] * (1 + self.queries[None])  # (B, m, D)

    def forward(self, regions, instruction=None):
        q, logits, read = self.attend(regions, instruction)
        whole = self.whole(self.norm(regions)).mean(1, keepdim=True)
        whole = whole.expand(-1, self.m, -1)  # the whole image, per query
        peak = logits.amax(2, keepdim=True)  # how well the best region matched
        return self.out(torch.cat([read, read * q, whole, peak], -1))


class GatedCrossAttention(nn.Module):
    """Flamingo's gated cross-attention block, run before an LM block: the text attends to the
    image regions, y = x + tanh(a) * attn(x, regions), then y + tanh(b) * mlp(y). The gates a, b
    start at 0: at initialisation the block is the identity and the LM unchanged.

    While generating (no gradients), the keys and values of the image regions are projected once
    per image and kept, as a key-value cache keeps the text's: each new word only projects its
    query. Training projects them in every step, as it must."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.attn_gate, self.mlp_gate = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        self.context: torch.Tensor | None = None

    @property
    def context(self) -> torch.Tensor | None:
        """The image's region features (B or 1, N, D) the text attends to."""
        return self._context

    @context.setter
    def context(self, value: torch.Tensor | None) -> None:
        self._context, self._keys_values = value, None  # a new image: its keys and values anew

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The context's keys and values per head, (B, heads, N, head_dim) each, projected once."""
        if self._keys_values is None:
            d, h = self.attn.embed_dim, self.attn.num_heads
            w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
            heads = [F.linear(self.context, w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]) for i in (1, 2)]
            self._keys_values = tuple(t.unflatten(-1, (h, d // h)).transpose(1, 2) for t in heads)
        return self._keys_values

    def read(self, x: torch.Tensor) -> torch.Tensor:
        """attn(x, regions), from the cached keys and values (the same function as ``self.attn``)."""
        d, h = self.attn.embed_dim, self.attn.num_heads
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        q = F.linear(x, w[:d], b[:d]).unflatten(-1, (h, d // h)).transpose(1, 2)
        k, v = (t.expand(len(x), -1, -1, -1) for t in self.keys_values())
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.attn.out_proj(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            raise ValueError("set the image context first (VisionLanguageModel does)")
        if torch.is_grad_enabled():
            context = self.context.expand(len(x), -1, -1) if len(self.context) == 1 else self.context
            y, _ = self.attn(self.norm1(x), context, context, need_weights=False)
        else:
            y = self.read(self.norm1(x))
        x = x + torch.tanh(self.attn_gate) * y
        return x + torch.tanh(self.mlp_gate) * self.mlp(self.norm2(x))


class CrossAttentionConnector(Connector):
    """Flamingo-style: the regions (normalised, projected, with positions) become the context of
    one ``GatedCrossAttention`` block per LM block; no visual tokens enter the sequence."""

    def __init__(self, image_dim: int, dim: int, depth: int = 2, regions: int = 64, heads: int = 4):
        super().__init__(image_dim, dim)
        self.proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, dim))
        self.positions = nn.Parameter(torch.zeros(regions, dim))
        self.blocks = nn.ModuleList(GatedCrossAttention(dim, heads) for _ in range(depth))

    def forward(self, regions, instruction=None):
        context = self.proj(regions) + self.positions
        for block in self.blocks:
            block.context = context
        return None

    def tokens_for(self, regions):
        return 0


CONNECTORS = {"linear": LinearConnector, "mlp": MLPConnector, "resampler": Resampler,
              "instruction": InstructionResampler, "cross_attention": CrossAttentionConnector}



def make_connector(name: str, image_dim: int, dim: int, **options) -> Connector:
    """A connector by name: one of ``CONNECTORS``."""
    if name not in CONNECTORS:
        raise ValueError(f"unknown connector {name!r}: expected one of {tuple(CONNECTORS)}")
    return CONNECTORS[name](image_dim, dim, **options)



__all__ = ["Connector", "LinearConnector", "MLPConnector", "Resampler", "InstructionResampler",
           "GatedCrossAttention", "CrossAttentionConnector", "CONNECTORS", "make_connector"]
