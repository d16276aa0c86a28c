"""The world heard: one tone per object, whose timbre encodes the shape, pitch the colour,
loudness the size and onset the horizontal position.
"""

from __future__ import annotations

import numpy as np
import torch

from mmlib.spectrogram import SAMPLE_RATE
from mmlib.world.scenes import ALL_SHAPES, COLORS, SIZES, Scenes

# Sound: pitch encodes the colour (major thirds from A3), timbre the shape, loudness the size.
PITCH_HZ = {c: 220.0 * 2 ** (4 * i / 12) for i, c in enumerate(COLORS)}
TIMBRES = {"circle": "sine", "square": "square", "triangle": "triangle", "star": "sawtooth",
           "cross": "pulse", "diamond": "organ", "hexagon": "bell", "ring": "hollow"}
LOUDNESS = {"small": 0.35, "large": 0.8}

# ---------------------------------------------------------------------------------------------
# Sound
# ---------------------------------------------------------------------------------------------

DURATION = 0.5
TONE_SECONDS = 0.2


def _timbre_wave(timbre: str, phase: np.ndarray, f0: float, sample_rate: int) -> np.ndarray:
    """One band-limited periodic wave (harmonics below Nyquist only), peak about 1."""
    n_harm = max(1, int((sample_rate / 2) // f0))
    h = np.arange(1, n_harm + 1)
    if timbre == "sine":
        amps = (h == 1).astype(float)
    elif timbre == "square":
        amps = np.where(h % 2 == 1, 1.0 / h, 0.0)
    elif timbre == "triangle":
        amps = np.where(h % 2 == 1, 1.0 / h**2, 0.0)
    elif timbre == "sawtooth":
        amps = 1.0 / h
    elif timbre == "pulse":  # 25 % duty cycle
        amps = np.abs(np.sin(np.pi * h * 0.25)) / h
    elif timbre == "organ":
        amps = np.where(h == 1, 1.0, np.where(h == 2, 0.5, np.where(h == 4, 0.25, 0.0)))
    elif timbre == "bell":
        amps = np.where(h == 1, 1.0, np.where(h == 3, 0.6, np.where(h == 5, 0.3, 0.0)))
    elif timbre == "hollow":
        amps = np.where(h == 1, 1.0, np.where(h == 2, 0.7, 0.0))
    else:  # pragma: no cover
        raise ValueError(f"unknown timbre {timbre!r}")
    wave = (amps[:, None] * np.sin(2 * np.pi * h[:, None] * phase[None, :])).sum(0)
    return wave / np.abs(wave).max()


_TONE_CACHE: dict = {}


def tone_table(sample_rate: int = SAMPLE_RATE, shapes: tuple[str, ...] = ALL_SHAPES) -> torch.Tensor:
    """Every (shape, colour) tone with its envelope: (len(shapes), len(COLORS), tone samples)."""
    key = (sample_rate, shapes)
    if key not in _TONE_CACHE:
        t = np.arange(int(TONE_SECONDS * sample_rate)) / sample_rate
        attack, release = np.minimum(1, t / 0.01), np.minimum(1, (TONE_SECONDS - t) / 0.03)
        envelope = np.clip(np.minimum(attack, release), 0, 1)
        table = np.stack([
            np.stack([_timbre_wave(TIMBRES[s], PITCH_HZ[c] * t, PITCH_HZ[c], sample_rate) * envelope for c in COLORS])
            for s in shapes
        ])
        _TONE_CACHE[key] = torch.tensor(table, dtype=torch.float32)
    return _TONE_CACHE[key]


def render_sounds(scenes: Scenes, sample_rate: int = SAMPLE_RATE, duration: float = DURATION) -> torch.Tensor:
    """One waveform per scene, shape (n, duration * sample_rate), float32 in [-1, 1].

    Each object is a tone: timbre = shape, pitch = colour (``PITCH_HZ``), loudness = size
    (``LOUDNESS``), onset = horizontal position (left objects sound first).
    """
    if sample_rate < 4000 or duration < 2 * TONE_SECONDS:
        raise ValueError(f"need sample_rate >= 4000 and duration >= {2 * TONE_SECONDS} s, got "
                         f"{sample_rate} Hz and {duration} s")
    table = tone_table(sample_rate, scenes.shapes)  # (S, C, L)
    n, k = scenes.shape.shape
    length, tone_len = int(duration * sample_rate), table.shape[-1]
    out = torch.zeros(n, length)
    onset = torch.as_tensor(np.round(scenes.x * (length - tone_len)).astype(np.int64))  # (n, k)
    loud = torch.tensor([LOUDNESS[s] for s in SIZES])[torch.as_tensor(scenes.size)]  # (n, k)
    mask = torch.as_tensor(scenes.mask)
    flat = table.reshape(-1, tone_len)  # row = shape * len(COLORS) + colour
    for j in range(k):
        row = torch.as_tensor(scenes.shape[:, j] * len(COLORS) + scenes.color[:, j])
        tones = flat.index_select(0, row).mul_((loud[:, j] * mask[:, j])[:, None])  # (n, L)
        index = onset[:, j, None] + torch.arange(tone_len)[None, :]  # (n, L)
        out.scatter_add_(1, index, tones)
    return out.clamp_(-1, 1)


__all__ = ["PITCH_HZ", "TIMBRES", "LOUDNESS", "DURATION", "TONE_SECONDS", "tone_table",
           "render_sounds"]
