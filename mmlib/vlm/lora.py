"""LoRA (chapter 7b): low-rank adapters, the efficient alternative to tuning every weight of a
language model (Hu et al. 2021).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmlib.lm import LanguageModel

class LoRALinear(nn.Module):
    """W x + (alpha / r) B A x with the pretrained W frozen, A (r x in) random, B (out x r) zero:
    at the start the layer computes exactly what W did (Hu et al. 2021)."""

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"the rank r must be at least 1, got {r}")
        self.base, self.scale = base.requires_grad_(False), alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    def merged(self) -> nn.Linear:
        """One plain linear layer computing the same function (no extra cost at inference)."""
        layer = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.scale * self.B @ self.A)
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer.to(self.base.weight.device)


def add_lora(lm: LanguageModel, r: int = 4, alpha: float = 8.0) -> LanguageModel:
    """Freeze ``lm`` and wrap the linear layers of its blocks (attention and MLP) in
    ``LoRALinear``; the embeddings and norms stay frozen. In place; returns ``lm``."""
    lm.requires_grad_(False)
    for block in lm.blocks:
        for parent in (block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, LoRALinear(child, r, alpha))
    return lm


def merge_lora(lm: LanguageModel) -> LanguageModel:
    """Replace every ``LoRALinear`` of ``lm`` by its merged linear layer. In place."""
    for module in list(lm.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return lm



__all__ = ["LoRALinear", "add_lora", "merge_lora"]
