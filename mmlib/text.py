"""Text as numbers: a tokenizer for the world's captions (word-level English, character-level Chinese).

Used from the chapter *A world to learn from* onwards: every text encoder reads the ids this
tokenizer makes. Four special tokens come first: ``<pad>`` (0), ``<unk>`` (1), ``<bos>`` (2),
``<eos>`` (3).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from mmlib import world

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)

# Every word the English captions, relations and questions can use, besides the attribute words.
_TEMPLATE_WORDS = ("a", "the", "there", "is", "it", "and", "in", "at", "on", "of", "above", "below",
                   "shapes", ":", ",", "?", "what", "colour", "shape", "size", "one", "how", "many",
                   "are", "yes", "no")


def world_words() -> list[str]:
    """Everything the world can say in English, each word once, in a fixed order."""
    words = list(_TEMPLATE_WORDS)
    words += [w for ws in world.SYNONYMS.values() for w in ws]
    words += [w for p in world.POSITIONS for w in p.split()]
    words += list(world.DISTRACTORS) + list(world.NUMBER_WORDS)
    words += ["left", "right"]
    return list(dict.fromkeys(words))


def world_characters() -> list[str]:
    """Every character the world's Chinese captions can use."""
    texts = list(world.ZH_COLORS.values()) + list(world.ZH_SHAPES.values()) + list(world.ZH_SIZES.values())
    texts += list(world.ZH_POSITIONS.values()) + list(world.ZH_NUMBERS) + ["一个的在有个图形：和"]
    return list(dict.fromkeys(ch for text in texts for ch in text))


class Tokenizer:
    """Maps text to ids and back. ``level='word'`` splits on spaces; ``level='char'`` per character.

    Unknown words map to ``<unk>``, or raise a ``ValueError`` when ``strict=True``.
    """

    def __init__(self, vocabulary: Iterable[str], level: str = "word", strict: bool = False):
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        tokens = [t for t in dict.fromkeys(vocabulary) if t not in SPECIALS]
        if not tokens:
            raise ValueError("the vocabulary is empty: give at least one token")
        if level == "char" and any(len(t) != 1 for t in tokens):
            raise ValueError("a character-level vocabulary holds single characters")
        self.level, self.strict = level, strict
        self.itos = list(SPECIALS) + tokens
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(4)

    @classmethod
    def for_world(cls, language: str = "en", strict: bool = False) -> "Tokenizer":
        """The tokenizer for the world's captions: 'en' (word-level) or 'zh' (character-level)."""
        if language == "en":
            return cls(world_words(), "word", strict)
        if language == "zh":
            return cls(world_characters(), "char", strict)
        raise ValueError(f"language must be 'en' or 'zh', got {language!r}")

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The ids of ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``: not words of a caption."""
        return tuple(self.stoi[t] for t in SPECIALS)

    def __repr__(self) -> str:
        return f"Tokenizer({len(self)} tokens, level={self.level!r}, strict={self.strict})"

    def split(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise ValueError(f"expected a string to tokenize, got {type(text).__name__}")
        return list(text.replace(" ", "")) if self.level == "char" else text.split()

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of ``text`` (with ``<bos>``/``<eos>`` around it when ``add_special``)."""
        ids = []
        for token in self.split(text):
            i = self.stoi.get(token)
            if i is None:
                if self.strict:
                    raise ValueError(f"unknown token {token!r} in {text!r}: it is not in the vocabulary "
                                     f"of {len(self)} tokens (use strict=False to map it to {UNK})")
                i = self.unk_id
            ids.append(i)
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Text of ``ids``; padding (and, by default, the other special tokens) dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        bad = [i for i in ids if not 0 <= int(i) < len(self)]
        if bad:
            raise ValueError(f"id {bad[0]} is outside the vocabulary (0..{len(self) - 1})")
        tokens = [self.itos[i] for i in ids if not (i == self.pad_id or (skip_special and i < len(SPECIALS)))]
        return "".join(tokens) if self.level == "char" else " ".join(tokens)

    def batch(self, texts: Sequence[str], add_special: bool = False, max_length: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad: ids (batch, longest) with ``<pad>`` = 0, and the lengths (batch,)."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("batch() takes a non-empty list of strings" +
                             (f", got a single string {texts!r}: wrap it in a list" if isinstance(texts, str) else ""))
        encoded = [self.encode(t, add_special) for t in texts]
        if max_length is not None:
            encoded = [e[:max_length] for e in encoded]
        lengths = torch.tensor([len(e) for e in encoded])
        ids = torch.full((len(encoded), max(1, int(lengths.max()))), self.pad_id, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
        return ids, lengths


__all__ = ["SPECIALS", "world_words", "world_characters", "Tokenizer"]
