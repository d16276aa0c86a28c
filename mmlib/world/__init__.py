"""A procedural multimodal world: scenes of coloured shapes, seen, described and heard.

Every later chapter learns from this world (introduced in the chapter *A world to learn from*).
A **scene** is one or more objects, each with a shape, a colour, a size and a position. The same
scene is written three ways:

- an **image** (RGB float tensor, 32x32 by default) in one of several visual *domains*;
- a **caption** (English with synonyms, varied word order and optional distractor words; or
  Chinese), plus relational captions and questions with answers;
- a **sound**: one tone per object whose timbre encodes the shape, pitch the colour, loudness the
  size and onset the horizontal position.

Everything is vectorised over the batch (no Python loop per pixel or per audio sample) and
deterministic for a given seed: labels are exact, and attribute combinations can be held out.

The world is three modules with one face: ``mmlib.world.scenes`` (scenes and images),
``mmlib.world.language`` (captions, questions, Chinese) and ``mmlib.world.sound``; everything is
importable from ``mmlib.world``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmlib.spectrogram import SAMPLE_RATE
from mmlib.world.language import (DISTRACTORS, NUMBER_WORDS, QUESTION_TYPES, SYNONYMS, WORD_TO_ATTRIBUTE,
                                  ZH_COLORS, ZH_NUMBERS, ZH_POSITIONS, ZH_SHAPES, ZH_SIZES, captions,
                                  chinese_captions, parse_caption, position_phrase, position_words, questions, relation,
                                  relation_caption)
from mmlib.world.scenes import (ALL_SHAPES, COLOR_RGB, COLORS, DOMAINS, NOVEL_SHAPES, PAIRS, PALETTE_RGB,
                                POSITIONS, RADIUS, SHAPES, SIZES, Scenes, default_held_out, position_index,
                                position_word, render_images, sample_scenes, with_companion)
from mmlib.world.sound import DURATION, LOUDNESS, PITCH_HZ, TIMBRES, TONE_SECONDS, render_sounds, tone_table


# ---------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """A batch of scenes in all three modalities."""

    scenes: Scenes
    images: torch.Tensor  # (n, 3, S, S) float in [0, 1]
    captions: list[str]
    sounds: torch.Tensor  # (n, samples)


def generate(n: int, n_objects: int | tuple[int, int] = 1, *, seed: int = 0, image_size: int = 32,
             domain: str = "clean", distractors: float = 0.0, **scene_options) -> Sample:
    """Scenes with their image, caption and sound: the world in one call (seeded)."""
    scenes = sample_scenes(n, n_objects, seed=seed, **scene_options)
    return Sample(scenes, render_images(scenes, image_size, domain),
                  captions(scenes, seed=seed + 1, distractors=distractors), render_sounds(scenes))


__all__ = ["DISTRACTORS", "NUMBER_WORDS", "QUESTION_TYPES", "SYNONYMS", "WORD_TO_ATTRIBUTE", "ZH_COLORS", "ZH_NUMBERS",
           "ZH_POSITIONS", "ZH_SHAPES", "ZH_SIZES", "captions", "chinese_captions", "parse_caption", "position_phrase",
           "position_words", "questions", "relation", "relation_caption", "ALL_SHAPES", "COLOR_RGB", "COLORS",
           "DOMAINS", "NOVEL_SHAPES", "PAIRS", "PALETTE_RGB", "POSITIONS", "RADIUS", "SHAPES", "SIZES", "Scenes",
           "default_held_out", "position_index", "position_word", "render_images", "sample_scenes", "with_companion", "DURATION",
           "LOUDNESS", "PITCH_HZ", "SAMPLE_RATE", "TIMBRES", "TONE_SECONDS", "render_sounds", "tone_table", "Sample", "generate"]
