"""Prompts and scenes for text to image (chapter 8): what a prompt may ask ('a large red circle
in the top left', 'a red circle and a blue square'), its parser, the captioned 16-pixel scenes a
generator trains on, and the fixed prompts every evaluation of the chapter draws.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mmlib import world
from mmlib.data import WorldDataset, render_uint8
from mmlib.text import Tokenizer

IMAGE_SIZE = 16
"""The side of the generated images, in pixels."""

MARGIN = 0.03
"""One-object scenes keep their centre this far (a fraction of the side) from the lines between
the thirds, so that a 16-pixel image shows its position word unambiguously."""


def clear_scenes(n: int, n_objects: int = 1, *, seed: int = 0, margin: float = MARGIN,
                 **options) -> world.Scenes:
    """``n`` scenes (``world.sample_scenes``) whose objects, in one-object scenes, sit at least
    ``margin`` from the lines between the thirds: their position word is never a matter of one
    pixel. Two-object scenes are drawn with distinct colours and shapes."""
    if n_objects == 1:
        scenes = world.sample_scenes(2 * n + 64, 1, seed=seed, **options)
        ok = np.ones(len(scenes), bool)
        for v in (scenes.x[:, 0], scenes.y[:, 0]):
            ok &= (np.abs(v - 1 / 3) > margin) & (np.abs(v - 2 / 3) > margin)
        keep = np.nonzero(ok)[0][:n]
        if len(keep) < n:  # pragma: no cover - about 70 % of scenes pass
            raise RuntimeError("too few scenes clear of the thirds' lines; lower the margin")
        return scenes[keep]
    return world.sample_scenes(n, n_objects, seed=seed, distinct=True, **options)


def mixed_scenes(n: int, two_objects: float, *, seed: int = 0, **options) -> world.Scenes:
    """``n`` scenes from ``clear_scenes``: the first ``n - round(two_objects n)`` with one
    object, the rest with two (seeds ``seed`` and ``seed + 1``)."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer of at least 2 scenes, got {n!r}")
    if not 0 <= two_objects < 1:
        raise ValueError(f"two_objects is a fraction in [0, 1), got {two_objects!r}")
    n2 = int(round(two_objects * n))
    parts = [clear_scenes(n - n2, 1, seed=seed, **options)]
    if n2:
        parts.append(clear_scenes(n2, 2, seed=seed + 1, **options))
    return world.Scenes.concatenate(parts)


def prompt_for(objects: Sequence[dict], size: bool = False, position: bool = False) -> str:
    """The prompt for a scene's objects: 'a [size] colour shape [position]', joined by 'and'.
    Size and position are named only for one object, when asked for."""
    if not objects:
        raise ValueError("a prompt needs at least one object")
    if len(objects) > 1:
        return " and ".join(f"a {o['color']} {o['shape']}" for o in objects)
    o = objects[0]
    words = ["a", o["size"]] if size else ["a"]
    words += [o["color"], o["shape"]]
    if position:
        words.append(world.position_phrase(o["position"]))
    return " ".join(words)


def prompts(scenes: world.Scenes, *, seed: int = 0, size: float = 0.5,
            position: float = 0.5) -> list[str]:
    """One prompt per scene (seeded); a one-object prompt names the size with probability
    ``size`` and the position with probability ``position``."""
    rng = np.random.default_rng(seed)
    with_size, with_position = rng.random(len(scenes)) < size, rng.random(len(scenes)) < position
    return [prompt_for(scenes.objects(i), bool(with_size[i]), bool(with_position[i]))
            for i in range(len(scenes))]


_LINKS = ("in", "at", "on", "the")


def parse_prompt(text: str) -> list[dict]:
    """What a prompt asks for: one dict per object with 'color', 'shape', and 'size' and
    'position' (None when the prompt leaves them free). Raises a ValueError a learner can act
    on for an empty prompt or a word the world does not know."""
    if not isinstance(text, str) or not text.split():
        raise ValueError(f"a prompt is a non-empty string such as 'a red circle', got {text!r}")
    known = set(world.COLORS) | set(world.SHAPES) | set(world.SIZES) | set(_LINKS) | {"a", "and"}
    known |= {w for p in world.POSITIONS for w in p.split()}
    unknown = [w for w in text.split() if w not in known]
    if unknown:
        raise ValueError(f"unknown word {unknown[0]!r} in the prompt {text!r}: prompts use the colours "
                         f"{world.COLORS}, the shapes {world.SHAPES}, the sizes {world.SIZES} and "
                         f"positions such as 'in the top left'")
    objects = []
    for part in text.split(" and "):
        words = part.split()
        if not words or words[0] != "a":
            raise ValueError(f"each object of a prompt starts with 'a' ('a red circle'), got {part!r}")
        words = words[1:]
        obj = {"size": None, "position": None}
        if words and words[0] in world.SIZES:
            obj["size"] = words.pop(0)
        if len(words) < 2 or words[0] not in world.COLORS or words[1] not in world.SHAPES:
            raise ValueError(f"an object is 'a [size] colour shape [position]', e.g. 'a small red "
                             f"circle on the left'; cannot read {part!r}")
        obj["color"], obj["shape"] = words[0], words[1]
        rest = [w for w in words[2:] if w not in _LINKS]
        if rest:
            where = " ".join(rest)
            if where not in world.POSITIONS:
                raise ValueError(f"unknown position {where!r} in {part!r}: expected one of {world.POSITIONS}")
            obj["position"] = where
        objects.append(obj)
    if len(objects) > 1 and any(o["size"] or o["position"] for o in objects):
        raise ValueError(f"prompts with two objects name only colours and shapes, got {text!r}")
    return objects


def generation_data(n: int, *, seed: int = 0, held_out=world.default_held_out(),
                    two_objects: float = 0.25, tokenizer: Tokenizer | None = None) -> WorldDataset:
    """Captioned 16-pixel scenes to train a generator on: a fraction ``two_objects`` of them
    with two objects ('a red circle and a blue square'), the rest with one, whose prompt names
    the size and the position half of the time each. No colour-shape pair in ``held_out``
    occurs. Labels: 'objects' (the count)."""
    scenes = mixed_scenes(n, two_objects, seed=seed, exclude=held_out)
    texts = prompts(scenes, seed=seed + 2)
    tokenizer = tokenizer or Tokenizer.for_world()
    tokens, lengths = tokenizer.batch(texts)
    images = render_uint8(scenes, IMAGE_SIZE, "clean")
    labels = {"objects": torch.as_tensor(scenes.count, dtype=torch.long)}
    return WorldDataset(images, labels, texts, tokens, lengths, None, scenes, tokenizer)



def asked_pairs(texts: Sequence[str]) -> list[set]:
    """The set of (colour, shape) pairs each prompt asks for."""
    return [{(o["color"], o["shape"]) for o in parse_prompt(t)} for t in texts]


def evaluation_prompts() -> dict[str, tuple[world.Scenes, list[str]]]:
    """The scenes and prompts chapter 8 and its seed benchmark judge a generator on (fixed for
    every seed): 320 one-object prompts of seen pairs, 320 of the held-out pairs (size and
    position named half of the time), and 128 two-object prompts of seen pairs."""
    held = world.default_held_out()
    made = {"seen pairs": (clear_scenes(320, seed=5, exclude=held), 5),
            "held-out pairs": (clear_scenes(320, seed=6, only=held), 6),
            "two objects": (clear_scenes(128, 2, seed=9, exclude=held), 9)}
    return {name: (scenes, prompts(scenes, seed=seed)) for name, (scenes, seed) in made.items()}


def free_prompts(pairs: int = 16, each: int = 8) -> list[str]:
    """``each`` copies of the bare prompt ('a red circle') of each of the first ``pairs`` seen
    colour-shape pairs: prompts that leave size and position free, to measure diversity."""
    held = world.default_held_out()
    seen = [p for p in world.PAIRS if p not in held]
    return [f"a {c} {s}" for c, s in seen[:pairs] for _ in range(each)]


__all__ = ["IMAGE_SIZE", "MARGIN", "clear_scenes", "mixed_scenes", "prompt_for", "prompts", "parse_prompt",
           "generation_data", "asked_pairs", "evaluation_prompts", "free_prompts"]
