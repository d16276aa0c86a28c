"""Sound as an image: the log-mel spectrogram in plain torch (used by the audio encoder, by
``SoundAsImage`` in chapter 5 and by the plots).

Time runs along the columns, pitch (mel bands, low to high) along the rows.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 8000
"""The book's audio sample rate (Hz): the world's sounds and every audio model use it."""


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Triangular mel filters (HTK mel scale), shape (n_mels, n_fft // 2 + 1)."""
    f_max = f_max or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = inv(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
    return torch.tensor(fb, dtype=torch.float32)


def log_mel_spectrogram(waves: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_fft: int = 256,
                        hop_length: int = 128, n_mels: int = 32) -> torch.Tensor:
    """Log-mel spectrogram in plain torch: (n, samples) -> (n, n_mels, frames)."""
    if waves.dim() != 2:
        raise ValueError(f"expected waves of shape (batch, samples), got {tuple(waves.shape)}")
    window = torch.hann_window(n_fft, device=waves.device)
    spec = torch.stft(waves, n_fft, hop_length=hop_length, window=window, return_complex=True).abs() ** 2
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(waves.device)
    return torch.log(fb @ spec + 1e-6)


__all__ = ["SAMPLE_RATE", "mel_filterbank", "log_mel_spectrogram"]
