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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# The world's vocabulary
# ---------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
"""The default shapes."""

NOVEL_SHAPES = ("hexagon", "ring")
"""Shapes held out of the default set: a new domain for transfer experiments."""

ALL_SHAPES = SHAPES + NOVEL_SHAPES

COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")

SIZES = ("small", "large")

DOMAINS = ("clean", "texture", "sketch", "palette")
"""Visual domains: plain background; mild textured background; outline-only sketch; shifted palette."""

COLOR_RGB = {
    "red": (0.90, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.72, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.60, 0.20, 0.85),
    "pink": (1.00, 0.50, 0.78),
}

# The shifted palette: every colour moved a step round the colour wheel and desaturated, so a
# "red" square looks different but is still called red (a domain shift, not a relabelling).
PALETTE_RGB = {
    "red": (0.80, 0.35, 0.20),
    "orange": (0.85, 0.75, 0.25),
    "yellow": (0.65, 0.85, 0.30),
    "green": (0.20, 0.70, 0.55),
    "cyan": (0.30, 0.65, 0.90),
    "blue": (0.40, 0.30, 0.85),
    "purple": (0.80, 0.30, 0.70),
    "pink": (0.90, 0.55, 0.60),
}

SYNONYMS = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "amber"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "emerald"),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue", "navy"),
    "purple": ("purple", "violet"),
    "pink": ("pink", "rose"),
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle", "wedge"),
    "star": ("star", "asterisk"),
    "cross": ("cross", "plus"),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon", "hex"),
    "ring": ("ring", "donut"),
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
"""Every attribute's words: the first is the canonical name, the others are synonyms."""

WORD_TO_ATTRIBUTE = {word: name for name, words in SYNONYMS.items() for word in words}

POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")

DISTRACTORS = ("look", "here", "we", "see", "clearly", "picture", "nice", "this", "shows", "image", "photo", "maybe")

NUMBER_WORDS = ("zero", "one", "two", "three", "four")

ZH_COLORS = {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色",
             "cyan": "青色", "blue": "蓝色", "purple": "紫色", "pink": "粉色"}
ZH_SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形",
             "cross": "十字形", "diamond": "菱形", "hexagon": "六边形", "ring": "圆环"}
ZH_SIZES = {"small": "小", "large": "大"}
ZH_POSITIONS = {"top left": "左上角", "top": "上面", "top right": "右上角", "left": "左边", "centre": "中间",
                "right": "右边", "bottom left": "左下角", "bottom": "下面", "bottom right": "右下角"}
ZH_NUMBERS = ("零", "一", "两", "三", "四")

# Sound: pitch encodes the colour (major thirds from A3), timbre the shape, loudness the size.
PITCH_HZ = {c: 220.0 * 2 ** (4 * i / 12) for i, c in enumerate(COLORS)}
TIMBRES = {"circle": "sine", "square": "square", "triangle": "triangle", "star": "sawtooth",
           "cross": "pulse", "diamond": "organ", "hexagon": "bell", "ring": "hollow"}
LOUDNESS = {"small": 0.35, "large": 0.8}
RADIUS = {"small": 0.16, "large": 0.24}  # fraction of the image side


def _check_names(given: Iterable[str], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    given = tuple(given) if not isinstance(given, str) else (given,)
    unknown = [g for g in given if g not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}: expected one of {allowed}")
    if not given:
        raise ValueError(f"need at least one {what}, got none")
    return given


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 128:
        raise ValueError(f"image_size must be an integer from 16 to 128, got {image_size!r}")
    return int(image_size)


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------

@dataclass
class Scenes:
    """A batch of scenes as arrays of shape (n, max_objects); slots beyond ``count`` are unused."""

    shape: np.ndarray  # (n, k) index into ``shapes``
    color: np.ndarray  # (n, k) index into COLORS
    size: np.ndarray  # (n, k) index into SIZES
    x: np.ndarray  # (n, k) centre, 0 = left edge, 1 = right edge
    y: np.ndarray  # (n, k) centre, 0 = top edge, 1 = bottom edge
    count: np.ndarray  # (n,) number of objects in each scene
    texture: np.ndarray  # (n, 3) per-scene texture parameters (phase, angle, frequency)
    shapes: tuple[str, ...] = SHAPES

    def __len__(self) -> int:
        return len(self.count)

    @property
    def mask(self) -> np.ndarray:
        """(n, k) True where an object exists."""
        return np.arange(self.shape.shape[1])[None, :] < self.count[:, None]

    def __getitem__(self, index) -> "Scenes":
        index = np.atleast_1d(np.arange(len(self))[index])
        return Scenes(self.shape[index], self.color[index], self.size[index], self.x[index], self.y[index],
                      self.count[index], self.texture[index], self.shapes)

    def objects(self, i: int) -> list[dict]:
        """Scene ``i`` as a list of dicts: shape, color, size, position word, x, y."""
        return [
            {"shape": self.shapes[self.shape[i, j]], "color": COLORS[self.color[i, j]], "size": SIZES[self.size[i, j]],
             "position": position_word(self.x[i, j], self.y[i, j]), "x": float(self.x[i, j]), "y": float(self.y[i, j])}
            for j in range(self.count[i])
        ]

    def combinations(self) -> set[tuple[str, str]]:
        """Every (colour, shape) pair that occurs in these scenes."""
        m = self.mask
        return {(COLORS[c], self.shapes[s]) for c, s in zip(self.color[m], self.shape[m])}


def _position_index(x, y):
    """Index into POSITIONS of centres (scalars or arrays), in thirds of the image."""
    col = (np.asarray(x) >= 1 / 3).astype(int) + (np.asarray(x) > 2 / 3)
    row = (np.asarray(y) >= 1 / 3).astype(int) + (np.asarray(y) > 2 / 3)
    return 3 * row + col


def position_word(x: float, y: float) -> str:
    """Where a centre lies, in thirds of the image: 'top left', 'centre', 'bottom', ..."""
    return POSITIONS[int(_position_index(x, y))]


def default_held_out(shapes: tuple[str, ...] = SHAPES) -> frozenset[tuple[str, str]]:
    """Colour-shape pairs never seen in training for compositional splits: one shape per colour,
    so every colour and every shape still appears in training with other partners."""
    return frozenset((c, shapes[(i + 1) % len(shapes)]) for i, c in enumerate(COLORS))


def _draw_positions(rng: np.random.Generator, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres for objects of the given radii (m, k), inside the image. With more than two objects
    each goes into its own quadrant (in random order), so that four of them always fit."""
    m, k = radius.shape
    u, v = rng.uniform(0, 1, (m, k)), rng.uniform(0, 1, (m, k))
    if k <= 2:
        return radius + u * (1 - 2 * radius), radius + v * (1 - 2 * radius)
    quadrant = np.argsort(rng.uniform(0, 1, (m, 4)), axis=1)[:, :k]
    left, top = 0.5 * (quadrant % 2), 0.5 * (quadrant // 2)
    return left + radius + u * (0.5 - 2 * radius), top + radius + v * (0.5 - 2 * radius)


def sample_scenes(n: int, n_objects: int | tuple[int, int] = 1, *, seed: int = 0,
                  shapes: Iterable[str] = SHAPES, colors: Iterable[str] = COLORS,
                  sizes: Iterable[str] = SIZES, exclude: Iterable[tuple[str, str]] = (),
                  only: Iterable[tuple[str, str]] | None = None, distinct: bool = False) -> Scenes:
    """Draw ``n`` random scenes (seeded). Objects never overlap.

    n_objects: an int, or ``(low, high)`` for a count drawn uniformly in [low, high] (at most 4).
    exclude:   (colour, shape) pairs that must not occur (e.g. held out for a compositional split).
    only:      if given, every object's (colour, shape) pair is drawn from these pairs.
    distinct:  objects in a scene differ in both colour and shape (unambiguous questions).
    """
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive number of scenes, got {n!r}")
    lo, hi = (n_objects, n_objects) if isinstance(n_objects, (int, np.integer)) else tuple(n_objects)
    if not (1 <= lo <= hi <= 4):
        raise ValueError(f"n_objects must be from 1 to 4 (or a range inside it), got {n_objects!r}")
    shapes = _check_names(shapes, ALL_SHAPES, "shape")
    colors = _check_names(colors, COLORS, "colour")
    sizes = _check_names(sizes, SIZES, "size")
    exclude = {tuple(p) for p in exclude}
    for c, s in exclude | set(only or ()):
        _check_names((c,), COLORS, "colour")
        _check_names((s,), ALL_SHAPES, "shape")
    pairs = [(c, s) for c in colors for s in shapes if (c, s) not in exclude]
    if only is not None:
        only = {tuple(p) for p in only}
        pairs = [p for p in pairs if p in only]
    if not pairs:
        raise ValueError("no (colour, shape) pair is left to draw after 'exclude'/'only'")
    rng = np.random.default_rng(seed)
    k = hi
    count = rng.integers(lo, hi + 1, size=n)
    pair_color = np.array([COLORS.index(c) for c, _ in pairs])
    pair_shape = np.array([shapes.index(s) for _, s in pairs])
    pick = rng.integers(0, len(pairs), size=(n, k))
    if distinct and k > 1:
        for _ in range(100):  # redraw slots that repeat an earlier slot's colour or shape
            clash = np.zeros((n, k), bool)
            for j in range(1, k):
                for i in range(j):
                    clash[:, j] |= (pair_color[pick[:, j]] == pair_color[pick[:, i]]) | (
                        pair_shape[pick[:, j]] == pair_shape[pick[:, i]])
            clash &= np.arange(k)[None, :] < count[:, None]
            if not clash.any():
                break
            pick[clash] = rng.integers(0, len(pairs), size=int(clash.sum()))
        else:
            raise ValueError("cannot draw objects that differ in colour and shape from these pairs")
    color, shape = pair_color[pick], pair_shape[pick]
    size_idx = np.array([SIZES.index(s) for s in sizes])[rng.integers(0, len(sizes), size=(n, k))]
    if k > 2:  # four objects only fit in a 32-pixel image when they are small
        size_idx = np.where(count[:, None] > 2, 0, size_idx)
    radius = np.array([RADIUS[s] for s in SIZES])[size_idx]
    x, y = _draw_positions(rng, radius)
    for _ in range(500):  # rejection sampling, vectorised: redraw every object of a scene with overlaps
        bad = np.zeros(n, bool)
        for j in range(1, k):
            for i in range(j):
                gap = np.hypot(x[:, i] - x[:, j], y[:, i] - y[:, j]) - (radius[:, i] + radius[:, j]) - 0.04
                bad |= (gap < 0) & (j < count)
        if not bad.any():
            break
        x[bad], y[bad] = _draw_positions(rng, radius[bad])
    else:  # pragma: no cover - astronomically unlikely with at most four small objects
        raise RuntimeError("could not place non-overlapping objects")
    texture = np.stack([rng.uniform(0, 2 * np.pi, n), rng.uniform(0, np.pi, n), rng.uniform(2, 5, n)], axis=1)
    return Scenes(shape, color, size_idx, x, y, count, texture, shapes)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def _shape_mask(name: str, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside-mask of a shape centred at 0 with radius r; dx, dy, r broadcast to (m, H, W)."""
    rho = torch.sqrt(dx * dx + dy * dy)
    if name == "circle":
        return rho <= r
    if name == "square":
        return torch.maximum(dx.abs(), dy.abs()) <= 0.8 * r
    if name == "diamond":
        return dx.abs() + dy.abs() <= r
    if name == "triangle":  # pointing up; y grows downwards
        return (dy <= 0.75 * r) & (dy >= -r + 1.9 * dx.abs())
    if name == "cross":
        arm = 0.33 * r
        return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    if name == "star":  # five points, one pointing up
        theta = torch.atan2(dx, -dy)
        return rho <= r * (0.45 + 0.55 * torch.cos(2.5 * theta).abs() ** 3)
    if name == "hexagon":
        return torch.maximum(dx.abs() * 0.866 + dy.abs() * 0.5, dy.abs()) <= 0.9 * r
    if name == "ring":
        return (rho <= r) & (rho >= 0.55 * r)
    raise ValueError(f"unknown shape {name!r}: expected one of {ALL_SHAPES}")


def render_images(scenes: Scenes, image_size: int = 32, domain: str = "clean", dtype=torch.float32) -> torch.Tensor:
    """Draw scenes as RGB images, shape (n, 3, S, S), values in [0, 1]. Same scenes, same pixels.

    domain: 'clean' (dark background), 'texture' (mild stripes and noise behind the objects),
    'sketch' (outlines only) or 'palette' (every colour shifted; names unchanged).
    """
    size = _check_size(image_size)
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: expected one of {DOMAINS}")
    n, k = scenes.shape.shape
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gy, gx = coords[:, None], coords[None, :]  # (S, 1), (1, S)
    if domain == "texture":
        t = torch.as_tensor(scenes.texture, dtype=torch.float32)
        phase, angle, freq = (t[:, i, None, None] for i in range(3))
        wave = torch.sin(2 * np.pi * freq * (gx * torch.cos(angle) + gy * torch.sin(angle)) + phase)
        noise = torch.sin(37.0 * gx * gy * freq + phase * 7)  # deterministic "grain"
        base = 0.22 + 0.07 * wave + 0.03 * noise  # (n, S, S)
        image = base[:, None].expand(n, 3, size, size) * torch.tensor([1.0, 0.95, 0.85])[None, :, None, None]
        image = image.contiguous()
    else:
        image = torch.full((n, 3, size, size), 0.08)
    palette = PALETTE_RGB if domain == "palette" else COLOR_RGB
    rgb = torch.tensor([palette[c] for c in COLORS], dtype=torch.float32)  # (8, 3)
    radius = torch.tensor([RADIUS[s] for s in SIZES], dtype=torch.float32)
    mask_all = scenes.mask
    for j in range(k):
        for s_idx, name in enumerate(scenes.shapes):
            rows = np.nonzero((scenes.shape[:, j] == s_idx) & mask_all[:, j])[0]
            if len(rows) == 0:
                continue
            rows_t = torch.from_numpy(rows)
            cx = torch.as_tensor(scenes.x[rows, j], dtype=torch.float32)[:, None, None]
            cy = torch.as_tensor(scenes.y[rows, j], dtype=torch.float32)[:, None, None]
            r = radius[torch.as_tensor(scenes.size[rows, j])][:, None, None]
            inside = _shape_mask(name, gx - cx, gy - cy, r)
            if domain == "sketch":  # keep the outline: inside, but with a neighbour outside
                pad = torch.nn.functional.pad(inside.float()[:, None], (1, 1, 1, 1))
                eroded = -torch.nn.functional.max_pool2d(-pad, 3, stride=1)[:, 0] > 0.5
                inside = inside & ~eroded
            color = rgb[torch.as_tensor(scenes.color[rows, j])]  # (m, 3)
            patch = image[rows_t]
            image[rows_t] = torch.where(inside[:, None], color[:, :, None, None], patch)
    return image.to(dtype)


# ---------------------------------------------------------------------------------------------
# Captions, relations, questions
# ---------------------------------------------------------------------------------------------

def _word(rng: np.random.Generator, name: str, synonyms: bool) -> str:
    words = SYNONYMS[name]
    return words[rng.integers(len(words))] if synonyms else words[0]


def _position_phrase(position: str) -> str:
    """'in the centre', 'at the top', 'on the left', 'in the bottom right'."""
    if position == "centre" or " " in position:
        return f"in the {position}"
    return f"at the {position}" if position in ("top", "bottom") else f"on the {position}"


def _object_phrase(rng, obj: dict, synonyms: bool) -> str:
    return f"{_word(rng, obj['size'], synonyms)} {_word(rng, obj['color'], synonyms)} {_word(rng, obj['shape'], synonyms)}"


def position_words(scenes: Scenes) -> np.ndarray:
    """(n, k) array of position words (see ``position_word``), vectorised."""
    return np.array(POSITIONS, dtype=object)[_position_index(scenes.x, scenes.y)]


def captions(scenes: Scenes, *, seed: int = 0, synonyms: bool = True, vary_order: bool = True,
             distractors: float = 0.0, position: bool = True) -> list[str]:
    """One English caption per scene (seeded).

    synonyms: draw each attribute's word from its synonyms (red/crimson/scarlet, circle/disk, ...).
    vary_order: draw one of several templates with different word orders.
    distractors: probability of adding words that carry no information ("look", "nice", ...).
    Two-object scenes get a relational caption ("the red circle is left of the blue square").
    """
    if not 0.0 <= distractors <= 1.0:
        raise ValueError(f"distractors is a probability in [0, 1], got {distractors!r}")
    rng = np.random.default_rng(seed)
    n = len(scenes)
    # All random choices up front (one array each), then only string assembly per scene.
    pick = rng.integers(0, 1 << 30, size=(n, 6)) if synonyms else np.zeros((n, 6), dtype=np.int64)
    template = rng.integers(0, 4, size=n) if vary_order else np.zeros(n, dtype=np.int64)
    add = rng.random(n) < distractors
    extra = rng.integers(0, 1 << 30, size=(n, 4))
    where_words = position_words(scenes)
    shapes = scenes.shapes
    out = []
    for i in range(n):
        if scenes.count[i] == 1:
            p = pick[i]
            size_words = SYNONYMS[SIZES[scenes.size[i, 0]]]
            color_words = SYNONYMS[COLORS[scenes.color[i, 0]]]
            shape_words = SYNONYMS[shapes[scenes.shape[i, 0]]]
            size = size_words[p[0] % len(size_words)]
            color = color_words[p[1] % len(color_words)]
            shape = shape_words[p[2] % len(shape_words)]
            where = _position_phrase(where_words[i, 0]) if position else ""
            t = template[i]
            if t == 0:
                words = f"a {size} {color} {shape} {where}"
            elif t == 1:
                words = f"{where} there is a {size} {color} {shape}"
            elif t == 2:
                words = f"a {color} {shape} {where} and it is {size}"
            else:
                words = f"the {shape} {where} is {color} and {size}"
        elif scenes.count[i] == 2:
            words = relation_caption(scenes.objects(i), np.random.default_rng(pick[i, 3]), synonyms)
        else:
            sub = np.random.default_rng(pick[i, 4])
            parts = [f"a {_object_phrase(sub, o, synonyms)}" for o in scenes.objects(i)]
            words = f"{NUMBER_WORDS[len(parts)]} shapes : " + " , ".join(parts[:-1]) + " and " + parts[-1]
        if add[i]:  # at the start or the end: never inside a phrase
            e = extra[i]
            words = (f"{DISTRACTORS[e[0] % len(DISTRACTORS)]} {words}" if e[1] % 2 else
                     f"{words} {DISTRACTORS[e[0] % len(DISTRACTORS)]}")
            if e[2] % 2:
                words = f"{DISTRACTORS[e[3] % len(DISTRACTORS)]} {words}"
        out.append(" ".join(words.split()))
    return out


def relation(a: dict, b: dict) -> str:
    """Where object ``a`` is relative to ``b``: 'left of', 'right of', 'above' or 'below'."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def relation_caption(objs: list[dict], rng: np.random.Generator | None = None, synonyms: bool = True) -> str:
    """'the red circle is left of the blue square' (either object may come first)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    a, b = (objs[0], objs[1]) if rng.random() < 0.5 else (objs[1], objs[0])
    name = lambda o: f"{_word(rng, o['color'], synonyms)} {_word(rng, o['shape'], synonyms)}"  # noqa: E731
    return f"the {name(a)} is {relation(a, b)} the {name(b)}"


QUESTION_TYPES = ("color", "shape", "size", "count", "exists")


def questions(scenes: Scenes, *, seed: int = 0, types: Iterable[str] = QUESTION_TYPES,
              exclude: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """One (question, answer) pair per scene, of a random type among ``types``.

    'color':  what colour is the {shape} ?        -> a colour
    'shape':  what shape is the {colour} one ?     -> a shape
    'size':   what size is the {colour} {shape} ?  -> small / large
    'count':  how many shapes are there ?          -> one .. four
    'exists': is there a {colour} {shape} ?        -> yes / no (half the time a pair not in the scene,
              never one of ``exclude``)
    Use scenes drawn with ``distinct=True`` so that 'the square' names one object.
    """
    types = _check_names(types, QUESTION_TYPES, "question type")
    exclude = set(exclude)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(scenes)):
        objs = scenes.objects(i)
        o = objs[rng.integers(len(objs))]
        kind = types[rng.integers(len(types))]
        if kind == "color":
            out.append((f"what colour is the {o['shape']} ?", o["color"]))
        elif kind == "shape":
            out.append((f"what shape is the {o['color']} one ?", o["shape"]))
        elif kind == "size":
            out.append((f"what size is the {o['color']} {o['shape']} ?", o["size"]))
        elif kind == "count":
            out.append(("how many shapes are there ?", NUMBER_WORDS[len(objs)]))
        else:
            present = {(p["color"], p["shape"]) for p in objs}
            if rng.random() < 0.5:
                out.append((f"is there a {o['color']} {o['shape']} ?", "yes"))
            else:
                absent = [(c, s) for c in COLORS for s in scenes.shapes if (c, s) not in present | exclude]
                c, s = absent[rng.integers(len(absent))]
                out.append((f"is there a {c} {s} ?", "no"))
    return out


def chinese_captions(scenes: Scenes, *, seed: int = 0, position: bool = True) -> list[str]:
    """Chinese captions, read character by character: e.g. '一个小的红色圆形在左边'."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(scenes)):
        objs = scenes.objects(i)
        parts = [f"一个{ZH_SIZES[o['size']]}的{ZH_COLORS[o['color']]}{ZH_SHAPES[o['shape']]}" for o in objs]
        if len(objs) == 1:
            where = f"在{ZH_POSITIONS[objs[0]['position']]}" if position else ""
            text = parts[0] + where if rng.random() < 0.5 or not where else where + "有" + parts[0]
        else:
            text = f"{ZH_NUMBERS[len(objs)]}个图形：" + "和".join(parts)
        out.append(text)
    return out


def parse_caption(text: str) -> list[dict]:
    """Read the objects back from an English caption: attributes in order of mention.

    Each object is a dict with 'color', 'shape' and, when the caption says it, 'size' and
    'position'; a relational caption also gives the first object a 'relation' to the second.
    Words the world does not know (distractors) are ignored.
    """
    words = text.replace("?", " ").split()
    objects: list[dict] = []
    current: dict = {}
    i = 0
    while i < len(words):
        w = words[i]
        two = " ".join(words[i:i + 2])
        attr = WORD_TO_ATTRIBUTE.get(w)
        if two in ("left of", "right of"):
            current.setdefault("relation", two)
            i += 2
            continue
        if w in ("above", "below"):
            current.setdefault("relation", w)
        elif two in POSITIONS and " " in two:
            current["position"] = two
            i += 2
            continue
        elif w in POSITIONS and not (w in ("left", "right") and i + 1 < len(words) and words[i + 1] == "of"):
            current["position"] = w
        elif attr in COLORS:
            if "color" in current and "shape" in current:
                objects.append(current)
                current = {}
            current["color"] = attr
        elif attr in ALL_SHAPES:
            if "shape" in current and "color" in current:
                objects.append(current)
                current = {}
            current["shape"] = attr
        elif attr in SIZES:
            if "size" in current and "shape" in current:
                objects.append(current)
                current = {}
            current["size"] = attr
        i += 1
    if current:
        objects.append(current)
    relation_holder = next((o for o in objects if "relation" in o), None)
    if relation_holder is not None and relation_holder is not objects[0]:
        objects[0]["relation"] = relation_holder.pop("relation")
    return objects


# ---------------------------------------------------------------------------------------------
# Sound
# ---------------------------------------------------------------------------------------------

SAMPLE_RATE = 8000
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
