"""The denoiser (chapter 8): a small U-Net for 16-pixel images whose blocks are modulated by the
time and the pooled caption (FiLM) and attend to the caption's tokens (cross-attention).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mmlib.encoders import Features
from mmlib.generate.prompts import IMAGE_SIZE

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


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling by 2: ``F.interpolate(x, scale_factor=2.0)``. Without
    gradients (sampling) the same values come from plain copies, several times faster on a CPU;
    with gradients it is ``F.interpolate``, whose backward pass trained the shipped weights."""
    if torch.is_grad_enabled():
        return F.interpolate(x, scale_factor=2.0)
    return x.repeat_interleave(2, -1).repeat_interleave(2, -2)


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
        h = self.up2(torch.cat([upsample2(h), h2], 1), cond)
        h = self.up1(torch.cat([upsample2(h), h1], 1), cond)
        return self.head(h)



__all__ = ["time_embedding", "FiLMBlock", "CrossAttention", "upsample2", "UNet"]
