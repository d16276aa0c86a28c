"""Feature extraction (特征提取层): one encoder per modality, one interface for all of them.

Chapter 2 builds the four-layer model from these; chapter 3 opens them up (convolution, the GRU
cell and attention written by hand). Every encoder maps one modality's batch to

- ``encoder(x)``        -> pooled features ``(batch, dim)``
- ``encoder.encode(x)`` -> ``Features(pooled, tokens, mask)`` with tokens ``(batch, n, dim)`` for
  attention-based fusion (image regions or patches, words, audio frames).

Inputs: images ``(B, 3, H, W)`` floats; text ``(B, L)`` token ids with 0 as padding; audio
``(B, samples)`` waveforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmlib.spectrogram import SAMPLE_RATE, log_mel_spectrogram


@dataclass
class Features:
    """What an encoder hands to the fusion layer."""

    pooled: torch.Tensor  # (B, dim)
    tokens: torch.Tensor  # (B, n, dim)
    mask: torch.Tensor  # (B, n) bool, True where a token is real (not padding)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens only: (B, n, d), (B, n) -> (B, d)."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class Encoder(nn.Module):
    """Base class: subclasses implement ``encode``; calling the encoder returns pooled features."""

    dim: int
    modality: str

    def encode(self, x: torch.Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).pooled


def check_images(x: torch.Tensor, image_size: int | None = None) -> None:
    """Raise a ValueError a learner can act on unless ``x`` is a float batch (B, 3, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected images as a tensor, got {type(x).__name__}")
    if x.dim() == 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}: "
                         "did you forget the batch dimension? (use x.unsqueeze(0))")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if image_size is not None and tuple(x.shape[2:]) != (image_size, image_size):
        raise ValueError(f"expected images of shape (B, 3, {image_size}, {image_size}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}: divide uint8 images by 255")
    if len(x) == 0:
        raise ValueError("got an empty batch of images")


def check_tokens(x: torch.Tensor, vocab_size: int) -> None:
    """Raise unless ``x`` is a (B, L) batch of token ids below ``vocab_size``."""
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"expected token ids as an integer tensor (B, L), got "
                         f"{getattr(x, 'dtype', type(x).__name__)}: use Tokenizer.batch(texts)")
    if x.dim() != 2:
        raise ValueError(f"expected token ids of shape (B, L), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"got an empty batch of token ids {tuple(x.shape)}")
    if int(x.max()) >= vocab_size or int(x.min()) < 0:
        raise ValueError(f"token id {int(x.max())} is outside the vocabulary of {vocab_size}: "
                         "was the text encoded with the same tokenizer?")


class ImageCNN(Encoder):
    """A small CNN: strided conv blocks (each halves the resolution), then one more conv; the tokens
    are the positions of the last feature map (8 x 8 = 64 regions for a 32-pixel image)."""

    modality = "image"

    def __init__(self, dim: int = 64, image_size: int = 32, channels: tuple[int, ...] = (32, 64),
                 head_kernel: int = 3):
        super().__init__()
        self.dim, self.image_size = dim, image_size
        layers, c_in = [], 3
        for c_out in channels:  # strided convolutions: cheaper on a CPU than conv + max-pool
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers += [nn.Conv2d(c_in, dim, head_kernel, padding=head_kernel // 2), nn.BatchNorm2d(dim), nn.ReLU()]
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # ~20% faster on CPUs
        side = image_size // 2 ** len(channels)
        self.pos = nn.Parameter(torch.zeros(1, side * side, dim))  # where each token sits

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, dim, H/4, W/4)."""
        check_images(x, self.image_size)
        return self.net(x.contiguous(memory_format=torch.channels_last))

    def encode(self, x: torch.Tensor) -> Features:
        fmap = self.feature_map(x)
        tokens = fmap.flatten(2).transpose(1, 2) + self.pos  # (B, n, dim)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Features(fmap.mean((2, 3)), tokens, mask)


class TinyViT(Encoder):
    """A Vision Transformer in miniature: patches -> linear embedding + positions -> Transformer."""

    modality = "image"

    def __init__(self, dim: int = 64, image_size: int = 32, patch: int = 4, depth: int = 2, heads: int = 4):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be divisible by patch {patch}")
        self.dim, self.image_size, self.patch = dim, image_size, patch
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)  # one linear map per patch
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def encode(self, x: torch.Tensor) -> Features:
        check_images(x, self.image_size)
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, n, dim)
        tokens = self.norm(self.blocks(tokens))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Features(tokens.mean(1), tokens, mask)


class BagOfEmbeddings(Encoder):
    """Text as an unordered bag: the mean of word embeddings. Blind to word order by design."""

    modality = "text"

    def __init__(self, vocab_size: int, dim: int = 64):
        super().__init__()
        self.dim, self.vocab_size = dim, vocab_size
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)

    def encode(self, x: torch.Tensor) -> Features:
        check_tokens(x, self.vocab_size)
        tokens, mask = self.embed(x), x != 0
        return Features(masked_mean(tokens, mask), tokens, mask)


class TextGRU(Encoder):
    """The RNN of the source article: a GRU reads the words in order; pooled = the last real state."""

    modality = "text"

    def __init__(self, vocab_size: int, dim: int = 64):
        super().__init__()
        self.dim, self.vocab_size = dim, vocab_size
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def encode(self, x: torch.Tensor) -> Features:
        check_tokens(x, self.vocab_size)
        mask = x != 0
        tokens, _ = self.gru(self.embed(x))  # (B, L, dim); states after padding are ignored below
        last = mask.sum(1).clamp_min(1) - 1
        pooled = tokens[torch.arange(len(x), device=x.device), last]
        return Features(pooled, tokens, mask)


class TextTransformer(Encoder):
    """Words + positions -> Transformer encoder (padding masked out); pooled = mean of real tokens."""

    modality = "text"

    def __init__(self, vocab_size: int, dim: int = 64, depth: int = 2, heads: int = 4, max_len: int = 32):
        super().__init__()
        self.dim, self.vocab_size, self.max_len = dim, vocab_size, max_len
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def encode(self, x: torch.Tensor) -> Features:
        check_tokens(x, self.vocab_size)
        if x.shape[1] > self.max_len:
            raise ValueError(f"texts of {x.shape[1]} tokens are longer than max_len={self.max_len}")
        mask = x != 0
        tokens = self.embed(x) + self.pos[:, : x.shape[1]]
        tokens = self.norm(self.blocks(tokens, src_key_padding_mask=~mask))
        return Features(masked_mean(tokens, mask), tokens, mask)


class AudioCNN(Encoder):
    """Waveform -> log-mel spectrogram -> 1-D convolutions over time; tokens are time frames."""

    modality = "audio"

    def __init__(self, dim: int = 64, n_mels: int = 32, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.dim, self.n_mels, self.sample_rate = dim, n_mels, sample_rate
        self.norm = nn.BatchNorm1d(n_mels)
        self.net = nn.Sequential(
            nn.Conv1d(n_mels, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.ReLU(),
            nn.Conv1d(dim, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.ReLU(),
        )

    def encode(self, x: torch.Tensor) -> Features:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"expected waveforms of shape (B, samples) as floats, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        spec = self.norm(log_mel_spectrogram(x, self.sample_rate, n_mels=self.n_mels))  # (B, mels, frames)
        tokens = self.net(spec).transpose(1, 2)  # (B, frames, dim)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Features(tokens.max(1).values, tokens, mask)


__all__ = ["Features", "masked_mean", "Encoder", "check_images", "check_tokens", "ImageCNN", "TinyViT",
           "BagOfEmbeddings", "TextGRU", "TextTransformer", "AudioCNN"]
