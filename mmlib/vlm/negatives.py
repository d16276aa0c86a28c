"""Negative instructions, a cure by data (chapter 9): LRV-Instruction's idea in the world.

LRV-Instruction (Liu et al. 2024) found that instruction data asks almost only about what is in
the image, so a model learns that the answer to "is there a ... ?" is yes; it added negative
instructions, questions about absent objects and about existing objects with a wrong attribute,
answered no. ``negative_data`` rewrites the describer's tuning data the same way: a share of its
visual questions, drawn at random, become existence questions about their scene, half about an
object that is there (yes) and half about a colour and a shape of the scene that are never
together (no: LRV's existent-object manipulation, POPE's adversarial probe), the same number of
exchanges and of steps. The descriptions stay as they were: they already name only what is
there. ``negative_describer`` tunes a describer on it.
"""

from __future__ import annotations

import numpy as np

from mmlib.data import ANSWERS, WorldDataset
from mmlib.recipes import NegativesRecipe
from mmlib.vlm.chat import chat_sequences, chat_tokenizer, description_data, instruction_data, mix
from mmlib.vlm.evaluation import pope_probes
from mmlib.vlm.model import VisionLanguageModel
from mmlib.vlm.tuning import describer_on_rewritten_data

NEGATIVE_SEED_OFFSET = 7
"""A recipe of seed s draws which questions to rewrite, and their probes, with seed 10 s + 7
(the describer's own data use 10 s to 10 s + 4, its preference pairs 10 s + 5)."""


def negative_questions(asked: WorldDataset, share: float, seed: int = 0) -> WorldDataset:
    """``asked`` (``instruction_data``) with a ``share`` of its questions, drawn with ``seed``,
    replaced by "is there a {colour} {shape} ?" about the same scene: yes for one of its
    objects or no for an adversarial absent pair (``pope_probes``), one or the other at random.
    Labels: 'answer_start' only (a rewritten question has no type of chapter 7's)."""
    if not 0 <= share <= 1:
        raise ValueError(f"share is a probability in [0, 1], got {share!r}")
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(rng.random(len(asked)) < share)
    probes = pope_probes(asked.scenes[rows], "adversarial", seed=seed)  # (yes, no) per scene
    questions = list(asked.texts)
    answers = [ANSWERS[i] for i in asked.labels["answer"].tolist()]
    for j, (i, no) in enumerate(zip(rows.tolist(), rng.integers(2, size=len(rows)).tolist())):
        questions[i], answers[i] = probes[2 * j + no]
    tokens, starts = chat_sequences(asked.tokenizer, questions, answers)
    lengths = (tokens != asked.tokenizer.pad_id).sum(1)
    return WorldDataset(asked.images, {"answer_start": starts}, questions, tokens, lengths, None, asked.scenes,
                        asked.tokenizer)


def negative_data(recipe: NegativesRecipe, tokenizer=None) -> WorldDataset:
    """The tuning data of ``recipe.describer`` (``mmlib.vlm.tuning_data``) with a ``recipe.share``
    of its questions rewritten by ``negative_questions``: at share 0, the same exchanges."""
    tokenizer = tokenizer or chat_tokenizer()
    base, s = recipe.describer, 10 * recipe.seed
    asked = instruction_data(base.questions, seed=s, tokenizer=tokenizer)
    asked = negative_questions(asked, recipe.share, seed=s + NEGATIVE_SEED_OFFSET)
    return mix(asked, description_data(base.descriptions, seed=s + 2, tokenizer=tokenizer), seed=s)


def negative_describer(recipe: NegativesRecipe, *, clip=None, device=None, progress: bool = True
                       ) -> VisionLanguageModel:
    """A describer tuned on ``negative_data(recipe)``: the shipped describer when that is what
    the recipe trains (share 0 at seed 0), else tuned afresh, about half a minute
    (``describer_on_rewritten_data``)."""
    return describer_on_rewritten_data(recipe, negative_data, clip=clip, device=device, progress=progress,
                                       desc=f"negatives {recipe.share:g}")


__all__ = ["NEGATIVE_SEED_OFFSET", "negative_questions", "negative_data", "negative_describer"]
