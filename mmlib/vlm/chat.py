"""Chat data (chapter 7): the world's visual questions and descriptions as chat exchanges,
``<user> instruction <assistant> answer <eos>``, whose loss covers only the assistant's tokens;
the fixed test sets every chapter of the family is scored on.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from mmlib import world
from mmlib.data import ANSWERS, WorldDataset, make_dataset
from mmlib.text import Tokenizer, world_words

CHAT_TOKENS = ("<image>", "<user>", "<assistant>")
"""Role tokens added to the world's vocabulary for chat-style sequences."""

QUESTION_KINDS = {"what colour": "color", "what shape": "shape", "what size": "size", "how many": "count",
                  "is there": "exists"}
"""How each question starts -> its type (``world.QUESTION_TYPES``)."""


def chat_tokenizer() -> Tokenizer:
    """The world's English words plus the role tokens ``<image>``, ``<user>``, ``<assistant>``."""
    return Tokenizer(world_words() + list(CHAT_TOKENS), strict=True)


def question_type(question: str) -> str:
    """'what colour is the square ?' -> 'color'."""
    for start, kind in QUESTION_KINDS.items():
        if question.startswith(start):
            return kind
    raise ValueError(f"not a question of the world: {question!r}")


def chat_sequences(tokenizer: Tokenizer, instructions: Sequence[str], answers: Sequence[str] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``<user> instruction <assistant> answer <eos>`` (right-padded), and for each
    sequence the position of its first answer token (where the loss starts). Without
    ``answers``, the prompts alone (ending with ``<assistant>``), ready for generation."""
    if isinstance(instructions, str) or not len(instructions):
        raise ValueError("give a non-empty list of instructions")
    if answers is not None and len(answers) != len(instructions):
        raise ValueError(f"{len(instructions)} instructions but {len(answers)} answers")
    rows, starts = [], []
    for i, text in enumerate(instructions):
        if not text.strip():
            raise ValueError("an instruction is empty: ask something, e.g. 'what colour is the square ?'")
        prompt = tokenizer.encode(f"<user> {text} <assistant>")
        reply = [] if answers is None else tokenizer.encode(answers[i]) + [tokenizer.eos_id]
        rows.append(prompt + reply)
        starts.append(len(prompt))
    tokens = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        tokens[r, :len(row)] = torch.tensor(row)
    return tokens, torch.tensor(starts)


def instruction_data(n: int, *, split: str = "train", seed: int = 0, held_out=world.default_held_out(),
                     n_objects=(1, 3), question_types: Sequence[str] = world.QUESTION_TYPES,
                     tokenizer: Tokenizer | None = None) -> WorldDataset:
    """Visual questions as chat sequences: images of 1-3 objects (the colour-shape pairs of
    ``held_out`` never seen in training), ``texts`` the questions, ``tokens`` the whole exchange,
    labels ``answer_start`` (where the loss starts), ``answer`` (index into
    ``mmlib.data.ANSWERS``) and ``qtype`` (index into ``world.QUESTION_TYPES``)."""
    tokenizer = tokenizer or chat_tokenizer()
    qa = make_dataset("qa", n, split=split, seed=seed, held_out=held_out, n_objects=n_objects,
                      question_types=question_types)
    answers = [ANSWERS[i] for i in qa.labels["answer"]]
    tokens, starts = chat_sequences(tokenizer, qa.texts, answers)
    labels = {**qa.labels, "answer_start": starts,
              "qtype": torch.tensor([world.QUESTION_TYPES.index(question_type(q)) for q in qa.texts])}
    lengths = (tokens != tokenizer.pad_id).sum(1)
    return WorldDataset(qa.images, labels, qa.texts, tokens, lengths, None, qa.scenes, tokenizer)


DESCRIBE = "what is in the image ?"
"""The instruction that asks for a description (built from the world's own words)."""


def description_data(n: int, *, split: str = "train", seed: int = 0, held_out=world.default_held_out(),
                     n_objects=(1, 3), tokenizer: Tokenizer | None = None) -> WorldDataset:
    """Descriptions as chat sequences: ``<user> what is in the image ? <assistant> caption <eos>``,
    the caption in the world's plain words (no synonyms, one word order, no positions), e.g.
    'a small red circle', 'the red circle is left of the blue square', 'three shapes : a ...'.
    ``texts`` are the instructions, ``labels['answer_start']`` where the loss starts, and
    ``descriptions_of(data.scenes)`` the reference descriptions."""
    pairs = make_dataset("pairs", n, split=split, seed=seed, held_out=held_out, n_objects=n_objects)
    return descriptions_dataset(pairs.images, pairs.scenes, tokenizer)


def descriptions_dataset(images: torch.Tensor, scenes: world.Scenes, tokenizer: Tokenizer | None = None
                         ) -> WorldDataset:
    """``images`` (uint8) of ``scenes`` with their reference descriptions as chat sequences, as
    ``description_data`` builds them (chapter 9 passes scenes it has rewritten)."""
    tokenizer = tokenizer or chat_tokenizer()
    n = len(scenes)
    tokens, starts = chat_sequences(tokenizer, [DESCRIBE] * n, descriptions_of(scenes))
    lengths = (tokens != tokenizer.pad_id).sum(1)
    return WorldDataset(images, {"answer_start": starts}, [DESCRIBE] * n, tokens, lengths, None, scenes, tokenizer)


def descriptions_of(scenes) -> list[str]:
    """The reference description of each scene: ``world.captions`` in its plainest form."""
    return world.captions(scenes, synonyms=False, vary_order=False, position=False)


def mix(*datasets: WorldDataset, seed: int = 0) -> WorldDataset:
    """One shuffled dataset of chat exchanges from several (e.g. questions and descriptions):
    images, texts, scenes and the labels they all have; tokens padded to the longest."""
    if not datasets:
        raise ValueError("give at least one dataset to mix")
    keys = set.intersection(*(set(d.labels) for d in datasets))
    if "answer_start" not in keys:
        raise ValueError("every dataset needs labels['answer_start'] (use instruction_data or description_data)")
    width = max(d.tokens.shape[1] for d in datasets)
    pad = datasets[0].tokenizer.pad_id
    tokens = torch.cat([F.pad(d.tokens, (0, width - d.tokens.shape[1]), value=pad) for d in datasets])
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    scenes = world.Scenes.concatenate([d.scenes for d in datasets])[order.numpy()]
    texts = [t for d in datasets for t in d.texts]
    return WorldDataset(torch.cat([d.images for d in datasets])[order],
                        {k: torch.cat([d.labels[k] for d in datasets])[order] for k in sorted(keys)},
                        [texts[i] for i in order.tolist()], tokens[order],
                        torch.cat([d.lengths for d in datasets])[order], None, scenes, datasets[0].tokenizer)




TEST_SIZES = {"test": 1_000, "heldout": 500, "descriptions": 500}
"""The fixed evaluation sets of chapters 7 to 8: test questions (seen colour-shape pairs),
questions about held-out pairs, test scenes to describe."""


def test_sets(tokenizer: Tokenizer | None = None) -> dict[str, WorldDataset]:
    """The chapters' evaluation sets (``TEST_SIZES``): 'test' and 'heldout' questions, and
    'descriptions' of test scenes. The same for every recipe and seed."""
    tokenizer = tokenizer or chat_tokenizer()
    return {"test": instruction_data(TEST_SIZES["test"], split="test", tokenizer=tokenizer),
            "heldout": instruction_data(TEST_SIZES["heldout"], split="heldout", tokenizer=tokenizer),
            "descriptions": description_data(TEST_SIZES["descriptions"], split="test", tokenizer=tokenizer)}


__all__ = ["descriptions_dataset", "CHAT_TOKENS", "QUESTION_KINDS", "chat_tokenizer", "question_type", "chat_sequences", "instruction_data",
           "DESCRIBE", "description_data", "descriptions_of", "mix", "TEST_SIZES", "test_sets"]
