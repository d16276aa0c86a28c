"""The world in words: English captions (synonyms, word order, distractors), relations,
questions with answers, Chinese captions, and a parser that reads captions back.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from mmlib.world.scenes import (ALL_SHAPES, COLORS, POSITIONS, SIZES, Scenes, check_names,
                                position_index)

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


# ---------------------------------------------------------------------------------------------
# Captions, relations, questions
# ---------------------------------------------------------------------------------------------

def _word(rng: np.random.Generator, name: str, synonyms: bool) -> str:
    words = SYNONYMS[name]
    return words[rng.integers(len(words))] if synonyms else words[0]


def position_phrase(position: str) -> str:
    """'in the centre', 'at the top', 'on the left', 'in the bottom right'."""
    if position == "centre" or " " in position:
        return f"in the {position}"
    return f"at the {position}" if position in ("top", "bottom") else f"on the {position}"


def _object_phrase(rng, obj: dict, synonyms: bool) -> str:
    return f"{_word(rng, obj['size'], synonyms)} {_word(rng, obj['color'], synonyms)} {_word(rng, obj['shape'], synonyms)}"


def position_words(scenes: Scenes) -> np.ndarray:
    """(n, k) array of position words (see ``position_word``), vectorised."""
    return np.array(POSITIONS, dtype=object)[position_index(scenes.x, scenes.y)]


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
            where = position_phrase(where_words[i, 0]) if position else ""
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
    types = check_names(types, QUESTION_TYPES, "question type")
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


__all__ = ["SYNONYMS", "WORD_TO_ATTRIBUTE", "DISTRACTORS", "NUMBER_WORDS", "ZH_COLORS", "ZH_SHAPES", "ZH_SIZES",
           "ZH_POSITIONS", "ZH_NUMBERS", "position_phrase", "position_words", "captions", "relation",
           "relation_caption", "QUESTION_TYPES", "questions", "chinese_captions", "parse_caption"]
