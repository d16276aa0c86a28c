"""Chapter 9's recipes: preference tuning against hallucination, the co-occurrence knob, the
decodings compared, part of ``mmlib.recipes`` (import them from there)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mmlib.recipes import DESCRIBER, VisionLanguageRecipe, _seeded
from mmlib.train import Optimisation


def _describer(recipe) -> "VisionLanguageRecipe":
    return replace(recipe.base, seed=recipe.seed)


def _seeded_share(recipe) -> None:
    _seeded(recipe)
    if not 0 <= recipe.share <= 1:
        raise ValueError(f"share is a probability in [0, 1], got {recipe.share!r}")


PREFERENCE_METHODS = ("dpo", "dpo+nll", "best-of-n")
PREFERENCE_REWARDS = ("f1", "precision")


@dataclass(frozen=True)
class PreferenceRecipe:
    """Chapter 9: chapter 7b's describer (``base`` at this recipe's seed) tuned on its own
    samples: ``samples`` descriptions at ``temperature`` of each of ``scenes`` training scenes,
    scored exactly by ``reward`` ('f1', or 'precision': 1 when nothing is named); a scene's best
    and worst, where they differ, make a pair. ``method``: 'dpo' (strength ``beta``, the
    describer frozen as reference), 'dpo+nll' (plus the chosen answers' tuning loss),
    'best-of-n' (that loss alone). ``steps`` steps of ``batch_size`` pairs."""

    method: str = "dpo+nll"
    beta: float = 0.1
    reward: str = "f1"
    scenes: int = 2_000
    samples: int = 4
    temperature: float = 1.0
    steps: int = 200
    batch_size: int = 32
    optim: Optimisation = Optimisation(lr=3e-5, weight_decay=0.0)
    base: VisionLanguageRecipe = DESCRIBER
    seed: int = 0

    def __post_init__(self):
        _seeded(self)
        for name, allowed in (("method", PREFERENCE_METHODS), ("reward", PREFERENCE_REWARDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}: choose one of {allowed}")
        if not self.beta > 0 or self.samples < 2 or not self.temperature > 0:
            raise ValueError(f"need beta > 0, samples >= 2 and temperature > 0; got {self.beta}, "
                             f"{self.samples} and {self.temperature}")

    describer = property(_describer, doc="The describer's recipe: ``base`` at this recipe's seed.")


@dataclass(frozen=True)
class CooccurrenceRecipe:
    """Chapter 9's co-occurrence knob: chapter 7b's describer (``base`` at this seed) tuned on
    its data with ``companion`` beside ``anchor`` in a ``share`` of the scenes that could hold
    both (``world.with_companion``; share 0: the base's data exactly)."""

    share: float = 0.0
    anchor: tuple = ("red", "circle")
    companion: tuple = ("green", "star")
    base: VisionLanguageRecipe = DESCRIBER
    seed: int = 0

    def __post_init__(self):
        _seeded_share(self)
        object.__setattr__(self, "anchor", tuple(self.anchor))
        object.__setattr__(self, "companion", tuple(self.companion))

    describer = property(_describer, doc="The describer's recipe: ``base`` at this recipe's seed.")


COOCCURRENCE = {share: CooccurrenceRecipe(share=share) for share in (0.0, 0.5, 0.9)}
"""Chapter 9's three describers, by how often the companion keeps the anchor company."""

@dataclass(frozen=True)
class NegativesRecipe:
    """Chapter 9's cure by data: chapter 7b's describer (``base`` at this seed) tuned on its data
    with a ``share`` of the visual questions rewritten as existence questions, half of them
    negative (``mmlib.vlm.negatives``; share 0: the base's data exactly), at equal steps."""

    share: float = 0.3
    base: VisionLanguageRecipe = DESCRIBER
    seed: int = 0

    def __post_init__(self):
        _seeded_share(self)

    describer = property(_describer, doc="The describer's recipe: ``base`` at this recipe's seed.")


NEGATIVES = {"as tuned": NegativesRecipe(share=0.0), "with negatives": NegativesRecipe()}
"""Chapter 9's cure by data: the describer's own data, and the same with 30 % of its questions
rewritten as existence questions (LRV-Instruction's negative instructions)."""

ALIGN = PreferenceRecipe()
"""Chapter 9's alignment run: DPO with the chosen answers' likelihood kept up."""

ALIGN_METHODS = {"DPO": replace(ALIGN, method="dpo"), "DPO + NLL": ALIGN,
                 "best-of-n": replace(ALIGN, method="best-of-n")}
"""Chapter 9's three ways to learn from the same scored samples, at equal steps."""

DPO_BETAS = (0.05, 0.1, 0.5)
"""Chapter 9's strengths of DPO's KL constraint (``ALIGN`` with each beta)."""

BEST_OF = (1, 2, 4, 8, 16)
"""Chapter 9's optimisation pressures against a learned reward: best of n samples, each n."""

DECODINGS = {"plain": {"alpha": 0.0, "cutoff": 0.0}, "cut-off only": {"alpha": 0.0, "cutoff": 0.1},
             "VCD, noise": {"alpha": 1.0, "cutoff": 0.1, "contrast": "noise", "noise": 0.5},
             "VCD, blind": {"alpha": 1.0, "cutoff": 0.1, "contrast": "blind"}}
"""Chapter 9's decodings (``contrastive_describe`` arguments): the model's own, VCD's cut-off
alone, VCD (alpha = 1, cut-off 0.1) against a half-noised image or against no image."""


__all__ = ["PREFERENCE_METHODS", "PREFERENCE_REWARDS", "PreferenceRecipe", "CooccurrenceRecipe", "COOCCURRENCE", "NegativesRecipe", "NEGATIVES", "ALIGN",
           "ALIGN_METHODS", "DPO_BETAS", "BEST_OF", "DECODINGS"]
