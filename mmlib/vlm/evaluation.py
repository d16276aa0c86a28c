"""Evaluation against the world's exact truth (chapters 7, 7b): accuracy per question type and
the language prior (``majority_baseline``); object hallucination by POPE's yes/no probes with
random, popular and adversarial negatives; descriptions read back by the world's parser, scored
by object F1 and CHAIR.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

import numpy as np
import torch

from mmlib import world
from mmlib.data import ANSWERS, WorldDataset
from mmlib.freezing import count_trainable

def accuracy_by_type(replies: Sequence[str], data: WorldDataset) -> dict[str, float]:
    """Exact-match accuracy of ``replies`` to ``data``'s questions, overall and per type."""
    if len(replies) != len(data):
        raise ValueError(f"{len(replies)} replies for {len(data)} questions")
    truth = [ANSWERS[i] for i in data.labels["answer"]]
    kinds = [world.QUESTION_TYPES[i] for i in data.labels["qtype"]]
    right = np.array([r.strip() == t for r, t in zip(replies, truth)])
    table = {"overall": float(right.mean())}
    for kind in world.QUESTION_TYPES:
        chosen = np.array([k == kind for k in kinds])
        if chosen.any():
            table[kind] = float(right[chosen].mean())
    return table


def majority_baseline(train: WorldDataset, test: WorldDataset) -> dict[str, float]:
    """The best a model that never looks can do: for each question type, always give the answer
    most frequent in ``train``; accuracy on ``test``, overall and per type."""
    replies = []
    best = {}
    for kind in range(len(world.QUESTION_TYPES)):
        answers = train.labels["answer"][train.labels["qtype"] == kind]
        if len(answers):
            best[kind] = ANSWERS[int(answers.mode().values)]
    replies = [best.get(int(k), "") for k in test.labels["qtype"]]
    return accuracy_by_type(replies, test)


POPE_STRATEGIES = ("random", "popular", "adversarial")


POPULAR_TOP_K = 3
"""POPE's 'popular' negatives come from the k most frequent absent objects (k = 3 in the paper)."""


def pope_probes(scenes, strategy: str, seed: int = 0, popular: Sequence[tuple[str, str]] = ()
                ) -> list[tuple[str, str]]:
    """Two yes/no probes per scene (Li et al. 2023): 'is there a {colour} {shape} ?' for an
    object in the scene (yes) and for an absent pair (no), drawn by ``strategy``:
    'random' (any absent pair), 'popular' (one of the ``POPULAR_TOP_K`` absent pairs that come
    first in ``popular``, the pairs ranked by frequency in the training data) or 'adversarial'
    (a colour and a shape that are both in the scene, but never together: a binding error;
    random if no such pair, see ``crossed_share``). The 'yes' probes are the same for every
    strategy with the same seed."""
    if strategy not in POPE_STRATEGIES:
        raise ValueError(f"unknown POPE strategy {strategy!r}: expected one of {POPE_STRATEGIES}")
    if strategy == "popular" and not popular:
        raise ValueError("the popular strategy needs the pairs ranked by training frequency")
    rng = np.random.default_rng(seed)
    probes = []
    for i in range(len(scenes)):
        objects = scenes.objects(i)
        present = {(o["color"], o["shape"]) for o in objects}
        yes = objects[rng.integers(len(objects))]
        if strategy == "popular":
            candidates = [p for p in popular if p not in present][:POPULAR_TOP_K]
        elif strategy == "adversarial" and _crossed(objects):
            candidates = _crossed(objects)
        else:
            candidates = [(c, s) for c in world.COLORS for s in scenes.shapes if (c, s) not in present]
        no = candidates[rng.integers(len(candidates))]
        probes += [(f"is there a {yes['color']} {yes['shape']} ?", "yes"), (f"is there a {no[0]} {no[1]} ?", "no")]
    return probes


def _crossed(objects) -> list[tuple[str, str]]:
    present = {(o["color"], o["shape"]) for o in objects}
    return [(a["color"], b["shape"]) for a in objects for b in objects if (a["color"], b["shape"]) not in present]


def crossed_share(scenes) -> float:
    """The share of scenes whose adversarial POPE negative is a true binding error (a colour
    and a shape of the scene, never together); the rest, one-object scenes among them, fall
    back to a random absent pair."""
    return float(np.mean([bool(_crossed(scenes.objects(i))) for i in range(len(scenes))]))


def pope_scores(replies: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """POPE's numbers for yes/no replies: accuracy, precision, recall and F1 of 'yes', and the
    share of 'yes' answers (a model that hallucinates says yes too often)."""
    if len(replies) != len(truths) or not len(truths):
        raise ValueError(f"need one reply per probe: got {len(replies)} replies for {len(truths)} probes")
    said = np.array([r.strip() == "yes" for r in replies])
    true = np.array([t == "yes" for t in truths])
    tp, fp, fn = (said & true).sum(), (said & ~true).sum(), (~said & true).sum()
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"accuracy": float((said == true).mean()), "precision": float(precision), "recall": float(recall),
            "f1": float(2 * precision * recall / max(precision + recall, 1e-12)), "yes_ratio": float(said.mean())}


def mentioned(text: str) -> list[tuple]:
    """The (colour, shape) pairs a description names, read back by ``world.parse_caption``
    (none when it cannot be read)."""
    try:
        return [(o.get("color"), o.get("shape")) for o in world.parse_caption(text)]
    except ValueError:
        return []


def description_scores(descriptions: Sequence[str], scenes) -> dict[str, float]:
    """Object precision, recall and F1 of descriptions read back with ``world.parse_caption``: an
    object counts as named correctly when its colour *and* shape are both right (a red square
    in a scene with a red circle and a blue square is a binding error, not half right)."""
    if len(descriptions) != len(scenes) or not len(scenes):
        raise ValueError(f"need one description per scene: got {len(descriptions)} for {len(scenes)} scenes")
    tp = fp = fn = 0
    for i, text in enumerate(descriptions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        said = set(mentioned(text))
        tp, fp, fn = tp + len(said & present), fp + len(said - present), fn + len(present - said)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12)}


def f1_by_count(descriptions: Sequence[str], scenes) -> dict[int, float]:
    """Object F1 (``description_scores``) separately for the scenes of each number of objects:
    {1: ..., 2: ..., 3: ...} for the counts that occur. Descriptions of more objects are longer."""
    if len(descriptions) != len(scenes) or not len(scenes):
        raise ValueError(f"need one description per scene: got {len(descriptions)} for {len(scenes)} scenes")
    counts = np.asarray(scenes.count)
    return {int(n): description_scores([d for d, c in zip(descriptions, counts) if c == n],
                                       scenes[counts == n])["f1"] for n in np.unique(counts)}


def chair(descriptions: Sequence[str], scenes) -> dict[str, float]:
    """CHAIR (Rohrbach et al. 2018) for descriptions of scenes: CHAIR_i, the share of mentioned
    objects (colour and shape; each counted once per description, as ``description_scores``
    counts them) that are not in the scene; CHAIR_s, the share of descriptions with at least one
    such object. A description that names no object the parser can read counts as one
    hallucination; 'unreadable' is the share of such descriptions."""
    if len(descriptions) != len(scenes):
        raise ValueError(f"{len(descriptions)} descriptions for {len(scenes)} scenes")
    named = hallucinated = bad = unreadable = 0
    for i, text in enumerate(descriptions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        said = set(mentioned(text))
        unreadable += not said
        said = said or {(None, None)}  # nothing readable: counted as one made-up object
        wrong = sum(pair not in present for pair in said)
        named += len(said)
        hallucinated += wrong
        bad += wrong > 0
    return {"chair_i": hallucinated / max(named, 1), "chair_s": bad / len(descriptions),
            "unreadable": unreadable / len(descriptions)}


def chair_by_position(descriptions: Sequence[str], scenes, min_named: int = 1) -> dict[int, dict[str, float]]:
    """CHAIR_i by where an object is named: for the k-th distinct object of each description
    (k = 1, 2, ...), how many descriptions name a k-th object ('named') and the share of those
    that are not in the scene ('made_up'). LURE (Zhou et al. 2024) found objects named later made
    up more often; the parser knows which mention is which, so here it is exact. Descriptions
    the parser cannot read name no object and are left out (``chair`` counts them).
    ``min_named``: count only the descriptions that name at least that many distinct objects
    (3: compare positions within descriptions of one kind, the three-object lists, rather than
    first objects of every kind against third objects of lists only)."""
    if len(descriptions) != len(scenes):
        raise ValueError(f"{len(descriptions)} descriptions for {len(scenes)} scenes")
    if not isinstance(min_named, int) or min_named < 1:
        raise ValueError(f"min_named is a number of objects >= 1, got {min_named!r}")
    named: dict[int, int] = {}
    wrong: dict[int, int] = {}
    for i, text in enumerate(descriptions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        said = list(dict.fromkeys(mentioned(text)))  # distinct, in order
        if len(said) < min_named:
            continue
        for k, pair in enumerate(said, 1):
            named[k] = named.get(k, 0) + 1
            wrong[k] = wrong.get(k, 0) + (pair not in present)
    return {k: {"named": named[k], "made_up": wrong[k] / named[k]} for k in sorted(named)}


def vqa_accuracy(model, data: WorldDataset, **sampling) -> dict[str, float]:
    """``model``'s replies to ``data``'s questions about its images, scored by
    ``accuracy_by_type``: overall and per kind of question."""
    return accuracy_by_type(model.answer(data.float_images(), data.texts, **sampling), data)


def describe(model, data: WorldDataset, **sampling) -> list[str]:
    """``model``'s descriptions of ``data``'s images: up to 24 words,
    greedy unless ``temperature`` is given."""
    images = data.float_images()
    return model.answer(images, data.texts, max_new=24, **sampling)


def sampling_generator(model, seed: int = 0) -> torch.Generator:
    """A random-number generator for sampled replies, on ``model``'s device and seeded: the same
    samples on every run (chapter 7b seeds it with its recipe's seed)."""
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


def answer_cost(model, data: WorldDataset, n: int = 256, max_new: int = 12, repeats: int = 5
                ) -> dict[str, float]:
    """What answering ``n`` of ``data``'s questions costs ``model``: its trainable parameters,
    the arithmetic per answer (FLOPs, counted by ``torch.utils.flop_counter``), the time of the
    prefill (the image and the question read, the first word written) per question, and the
    speed of every further word (words per second, with the key-value cache). The times are the
    fastest of ``repeats`` runs, each reply generated to ``max_new`` tokens: our answers end
    after a word or two, too soon to time the words after the first."""
    from torch.utils.flop_counter import FlopCounterMode

    if not 0 < n <= len(data):
        raise ValueError(f"n is a number of questions from 1 to {len(data)}, got {n}")
    if max_new < 2 or repeats < 1:
        raise ValueError(f"need max_new >= 2 and repeats >= 1, got {max_new} and {repeats}")
    images, texts = data.float_images()[:n], data.texts[:n]
    with FlopCounterMode(display=False) as counter:
        model.answer(images, texts, max_new=max_new)

    def fastest(tokens: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.answer(images, texts, max_new=tokens, stop=False)
            times.append(time.perf_counter() - start)
        return min(times)

    first, whole = fastest(1), fastest(max_new)
    return {"trainable": count_trainable(model), "FLOPs per answer": counter.get_total_flops() / n,
            "prefill ms": 1e3 * first / n,
            "words/s after the first": n * (max_new - 1) / max(whole - first, 1e-9)}


def popular_pairs(data: WorldDataset) -> list[tuple[str, str]]:
    """The colour-shape pairs of ``data``'s scenes, most frequent first: POPE's 'popular'
    negatives are drawn from the top of this list."""
    counts = Counter((o["color"], o["shape"]) for i in range(len(data)) for o in data.scenes.objects(i))
    return [pair for pair, _ in counts.most_common()]


PROBE_SEED = 1
"""The seed that draws the chapters' POPE probes."""


def ask_pope(model, data: WorldDataset, strategy: str, popular: Sequence[tuple[str, str]] = (),
         **sampling) -> dict[str, float]:
    """POPE on ``data``'s test scenes: two probes per scene (``pope_probes``, seeded by
    ``PROBE_SEED``) answered by ``model`` (a ``VisionLanguageModel``); ``pope_scores``."""
    probes = pope_probes(data.scenes, strategy, seed=PROBE_SEED, popular=popular)
    scene_of = torch.arange(len(probes)) // 2  # two probes per scene
    said = model.answer(data.float_images()[scene_of], [q for q, _ in probes], **sampling)
    return pope_scores(said, [a for _, a in probes])


def pope_by_pair(model, data: WorldDataset, strategy: str, popular: Sequence[tuple[str, str]] = (),
                 held_out=world.default_held_out(), **sampling) -> dict[str, dict[str, float]]:
    """``ask_pope``'s probes scored apart: those that name a pair of ``held_out`` (never seen in
    training) and those that name a seen pair; 'probes' counts each part."""
    probes = pope_probes(data.scenes, strategy, seed=PROBE_SEED, popular=popular)
    scene_of = torch.arange(len(probes)) // 2
    said = model.answer(data.float_images()[scene_of], [q for q, _ in probes], **sampling)
    unseen = [tuple(q.split()[3:5]) in held_out for q, _ in probes]  # 'is there a red square ?'
    out = {}
    for name, part in (("seen pairs", False), ("held-out pairs", True)):
        rows = [i for i, u in enumerate(unseen) if u == part]
        if rows:
            out[name] = {**pope_scores([said[i] for i in rows], [probes[i][1] for i in rows]),
                         "probes": len(rows)}
    return out


__all__ = ["answer_cost", "POPULAR_TOP_K", "crossed_share", "pope_by_pair", "accuracy_by_type", "vqa_accuracy", "describe", "sampling_generator", "majority_baseline", "POPE_STRATEGIES", "pope_probes", "pope_scores", "mentioned",
           "description_scores", "f1_by_count", "chair", "chair_by_position", "popular_pairs", "PROBE_SEED", "ask_pope"]
