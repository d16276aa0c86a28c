"""A cause of hallucination made a knob (chapter 9): co-occurrence.

POPE (Li et al. 2023) and LURE (Zhou et al. 2024) blame objects that often appear together in
the training data: a model that has seen a fork beside most plates names a fork beside a plate
that has none. Our world draws the objects of a scene at random, so nothing co-occurs unless we
make it. ``companion_data`` does: the describer's own tuning data, except that in a share of the
descriptions' scenes a second object keeps an anchor object company
(``world.with_companion``). ``companion_describer`` tunes a describer on it, and
``companion_scores`` asks, on test scenes with the anchor and without the companion, how often
the describer names the companion anyway and how often it says yes to "is there a ... ?".
"""

from __future__ import annotations

import numpy as np
import torch

from mmlib import world
from mmlib.data import WorldDataset, render_uint8
from mmlib.recipes import CooccurrenceRecipe
from mmlib.vlm.chat import chat_tokenizer, description_data, descriptions_dataset, instruction_data, mix
from mmlib.vlm.evaluation import describe, mentioned
from mmlib.vlm.model import VisionLanguageModel
from mmlib.vlm.tuning import describer_on_rewritten_data


def companion_data(recipe: CooccurrenceRecipe, tokenizer=None) -> WorldDataset:
    """The tuning data of ``recipe.describer`` (``mmlib.vlm.tuning_data``), its descriptions'
    scenes passed through ``world.with_companion``: at share 0, the same data exactly."""
    tokenizer = tokenizer or chat_tokenizer()
    base, s = recipe.describer, 10 * recipe.seed
    asked = instruction_data(base.questions, seed=s, tokenizer=tokenizer)
    plain = description_data(base.descriptions, seed=s + 2, tokenizer=tokenizer)
    scenes = world.with_companion(plain.scenes, recipe.anchor, recipe.companion, recipe.share, seed=s + 2)
    images = render_uint8(scenes, plain.images.shape[-1], "clean")
    return mix(asked, descriptions_dataset(images, scenes, tokenizer), seed=s)


def companion_describer(recipe: CooccurrenceRecipe, *, clip=None, device=None, progress: bool = True
                        ) -> VisionLanguageModel:
    """A describer tuned on ``companion_data(recipe)``: the shipped describer when that is what
    the recipe trains (share 0 at seed 0), else tuned afresh, about half a minute
    (``describer_on_rewritten_data``)."""
    return describer_on_rewritten_data(recipe, companion_data, clip=clip, device=device, progress=progress,
                                       desc=f"share {recipe.share:g}")


PROBE_SCENES = 300
"""How many test scenes ``companion_probes`` returns."""


def companion_probes(recipe: CooccurrenceRecipe, n: int = PROBE_SCENES) -> WorldDataset:
    """``n`` test scenes (fixed, whatever the recipe's seed) that hold the anchor and at least
    one other object but not the companion: where a describer that learned the pairing would
    add the companion."""
    drawn = description_data(40 * n, split="test", seed=99)
    keep = [i for i in range(len(drawn)) if len(drawn.scenes.objects(i)) > 1
            and recipe.anchor in {(o["color"], o["shape"]) for o in drawn.scenes.objects(i)}
            and recipe.companion not in {(o["color"], o["shape"]) for o in drawn.scenes.objects(i)}]
    if len(keep) < n:
        raise ValueError(f"only {len(keep)} test scenes hold {recipe.anchor} without {recipe.companion}; ask fewer")
    return drawn.subset(torch.tensor(keep[:n]))


def companion_scores(model: VisionLanguageModel, probes: WorldDataset, recipe: CooccurrenceRecipe
                     ) -> dict[str, float]:
    """On ``probes`` (``companion_probes``): 'names companion', the share of greedy descriptions
    that name the absent companion; 'says yes', the share of "is there a {companion} ?" answered
    yes (POPE's probe for this one object; every right answer is no)."""
    said = describe(model, probes)
    named = np.mean([recipe.companion in mentioned(text) for text in said])
    question = f"is there a {recipe.companion[0]} {recipe.companion[1]} ?"
    replies = model.answer(probes.float_images(), [question] * len(probes))
    return {"names companion": float(named), "says yes": float(np.mean([r.strip() == "yes" for r in replies]))}


__all__ = ["companion_data", "companion_describer", "PROBE_SCENES", "companion_probes", "companion_scores"]
