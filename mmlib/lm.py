"""A decoder-only language model in the minGPT manner (chapter 7): token and position embeddings,
causal self-attention blocks, an output head tied to the token embedding, and ``generate`` with
greedy or temperature / top-k sampling and a key-value cache.

The pieces in the order a reader meets them: ``CausalSelfAttention`` (each position attends to
itself and the positions before it) -> ``Block`` (attention and an MLP, each with a residual
connection and pre-normalisation) -> ``LanguageModel``. A multimodal model feeds the same network
image features as a *prefix* of embeddings (``prefix=``) or through extra layers run before each
block (``adapters=``, e.g. Flamingo's gated cross-attention); see ``mmlib.vlm``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

Cache = list  # one (keys, values) pair per block, each (B, heads, T, head_dim)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention: position t sees positions <= t only."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, past=None, mask=None):
        """x: (B, T, C); past: cached (keys, values) of earlier positions;
        mask: boolean (T, T_past + T), True where attention is allowed.
        Returns the output (B, T, C) and the new cache."""
        B, T, C = x.shape
        hd = C // self.heads
        q, k, v = (t.view(B, T, self.heads, hd).transpose(1, 2)  # B,H,T,hd
                   for t in self.qkv(x).split(C, dim=2))
        if past is not None:  # the new positions come after the cached ones
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        attend = F.scaled_dot_product_attention
        if mask is None and past is None:
            y = attend(q, k, v, is_causal=True)
        else:
            y = attend(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)  # join the heads
        return self.out(y), (k, v)


class Block(nn.Module):
    """x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, past=None, mask=None):
        y, present = self.attn(self.norm1(x), past, mask)
        x = x + y
        return x + self.mlp(self.norm2(x)), present


class LanguageModel(nn.Module):
    """Tokens (B, T) -> next-token logits (B, T, V). ``prefix`` (B, P, dim): embeddings placed
    before the tokens (e.g. image features); ``adapters``: one module per block, applied to the
    hidden states before it; ``past``: the key-value cache of the positions already seen.
    ``loss(batch)`` is next-token cross-entropy; ``pad_id`` marks the padding it ignores."""

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, max_len: int,
                 pad_id: int | None = None):
        super().__init__()
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id {pad_id} is not a token of the vocabulary of {vocab_size}")
        self.dim, self.max_len, self.vocab_size, self.pad_id = dim, max_len, vocab_size, pad_id
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tokens.weight  # weight tying: one matrix reads and writes words
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed(self, tokens: torch.Tensor | None, prefix: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        """Token embeddings after the ``prefix``, plus positions ``start``, ``start + 1``, ..."""
        parts = [] if prefix is None else [prefix]
        if tokens is not None:
            if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"expected token ids of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")
            if tokens.numel() and (int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0):
                raise ValueError(f"a token id is outside the vocabulary of {self.vocab_size}")
            parts.append(self.tokens(tokens))
        x = torch.cat(parts, 1)
        if start + x.shape[1] > self.max_len:
            raise ValueError(f"a sequence of {start + x.shape[1]} positions is longer than max_len={self.max_len}")
        return x + self.positions[start:start + x.shape[1]]

    def forward(self, tokens: torch.Tensor | None, prefix: torch.Tensor | None = None, past: Cache | None = None,
                adapters: list | None = None, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Cache]:
        start = 0 if past is None else past[0][0].shape[2]
        x = self.embed(tokens, prefix, start)
        present = []
        for i, block in enumerate(self.blocks):
            if adapters is not None:
                x = adapters[i](x)
            x, kv = block(x, None if past is None else past[i], mask)
            present.append(kv)
        return self.head(self.norm(x)), present

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy of ``batch['tokens']`` (B, T): every position predicts the
        token after it; padding (``pad_id``) is never a target. Text-only pretraining."""
        tokens = batch["tokens"]
        logits, _ = self(tokens)
        ignore = -100 if self.pad_id is None else self.pad_id
        return {"loss": F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=ignore)}

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new: int, *, prefix: torch.Tensor | None = None,
                 adapters: list | None = None, temperature: float = 0.0, top_k: int | None = None,
                 eos_id: int | None = None, use_cache: bool = True, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continue ``tokens`` (B, T) by up to ``max_new`` tokens: greedy when ``temperature`` is
        0, else sampled from softmax(logits / temperature), optionally among the ``top_k`` most
        likely. Stops early when every row has produced ``eos_id``. Returns the new tokens
        (B, n) and the logits that chose them (B, n, V). With ``use_cache`` each step feeds only
        the newest token and reuses the keys and values of the others (same result, less work)."""
        if max_new <= 0:
            raise ValueError(f"max_new must be positive, got {max_new}")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"need temperature >= 0 and top_k >= 1, got {temperature} and {top_k}")
        new, scores, past = [], [], None
        done = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
        sequence = tokens
        for step in range(max_new):
            if use_cache and past is not None:
                logits, past = self(sequence[:, -1:], past=past, adapters=adapters)
            else:
                logits, past = self(sequence, prefix=prefix, adapters=adapters)
            logits = logits[:, -1]
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                scaled = logits / temperature
                if top_k is not None:
                    kth = scaled.topk(min(top_k, scaled.shape[-1])).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                nxt = torch.multinomial(scaled.softmax(-1), 1, generator=generator)[:, 0]
            if eos_id is not None:
                nxt = nxt.masked_fill(done, eos_id)
                done |= nxt == eos_id
            new.append(nxt)
            scores.append(logits)
            sequence = torch.cat([sequence, nxt[:, None]], 1)
            if eos_id is not None and bool(done.all()):
                break
        return torch.stack(new, 1), torch.stack(scores, 1)


__all__ = ["CausalSelfAttention", "Block", "LanguageModel"]
