"""Every trained model and every compared setting of the book, as values: the one place where the
book writes its hyperparameters.

A recipe is a frozen dataclass that holds everything deciding a model's weights; its ``seed``
draws the data sample, the initialisation and the batches. A chapter builds a recipe from here,
shows its fields and calls the function that trains by it, in the module of its concept; the
seed benchmark (``benchmarks/seeds.py``, through ``mmlib.claims``) reruns the very same recipes
with ``dataclasses.replace(recipe, seed=s)``, so seed 0 is the chapter's run.

=========================  ========  ==============================================================
recipe                     chapter   trained or run by
=========================  ========  ==============================================================
``FusionRecipe``           3         ``mmlib.models.train_fusion_encoder``, ``compare_fusions``
``ClipRecipe``             4         ``mmlib.pretrain.train_clip`` (cached: ``pretrained_clip``)
``ObjectivesRecipe``       4b        ``mmlib.pretrain.compare_objectives``, ``compare_temperatures``,
                                     ``compare_batch_losses``
``TransferRecipe``         5         ``mmlib.transfer.compare_transfer``, ``compare_normalisation``
``LitRecipe``              5         ``mmlib.pretrain.compare_lit``
``DDP_SAME_LOSS``, ...     6         ``python -m mmlib.pretrain`` under ``mmlib.distributed.launch``
``VisionLanguageRecipe``   7-7c, 8   ``mmlib.vlm.tuning``: ``VQA``, ``DESCRIBER``, ``DESCRIBER_LORA``,
                                     ``DESCRIBER_LORA_POSITIONS``, ``CONNECTOR_RECIPES``
``JudgeRecipe``            8         ``mmlib.generate.train_judge`` (shipped)
``GeneratorRecipe``        8         ``mmlib.generate.train_generator`` (shipped)
``PreferenceRecipe``       9         ``mmlib.vlm.preference.tune_preferences``: ``ALIGN``, ``ALIGN_METHODS``
``CooccurrenceRecipe``     9         ``mmlib.vlm.causes.companion_describer``: ``COOCCURRENCE``
``NegativesRecipe``        9         ``mmlib.vlm.negatives.negative_describer``: ``NEGATIVES``
=========================  ========  ==============================================================

Chapter 9's recipes are written in ``mmlib.recipes.alignment`` and read from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from mmlib.fusion import FUSIONS
from mmlib.train import FrozenDict, Optimisation


def _seeded(recipe) -> None:
    if not isinstance(recipe.seed, int) or isinstance(recipe.seed, bool) or recipe.seed < 0:
        raise ValueError(f"a recipe's seed is a non-negative integer, got {recipe.seed!r}")


# ---------------------------------------------------------------------------------------------
# Chapter 3: seven fusions on one locked image encoder
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FusionRecipe:
    """Chapter 3: an image CNN learns to name colour and shape (``encoder_examples`` single
    objects, ``encoder_epochs``), is copied and locked, and each of ``fusions`` joins it with a
    bag-of-embeddings question encoder to answer 'what colour is the <shape> ?' about scenes of
    two objects (``questions``, ``epochs``)."""

    encoder_examples: int = 8_000
    encoder_width: int = 32
    encoder_channels: tuple[int, ...] = (16, 32)
    encoder_epochs: int = 8
    encoder_lr: float = 1e-2
    batch_size: int = 128
    questions: int = 10_000
    test_questions: int = 2_000
    text_dim: int = 32
    fused_dim: int = 64
    epochs: int = 12
    lr: float = 1e-2
    fusions: tuple[str, ...] = FUSIONS
    seed: int = 0

    def __post_init__(self):
        _seeded(self)
        unknown = [f for f in self.fusions if f not in FUSIONS + ("single",)]
        if unknown:
            raise ValueError(f"unknown fusions {unknown}: expected some of {FUSIONS} or 'single'")


# ---------------------------------------------------------------------------------------------
# Chapters 4 and 4b: contrastive pretraining and its alternatives
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipRecipe:
    """Chapter 4's CLIP, which chapters 5 to 8 reuse: ``pairs`` noisy image-caption pairs (the
    default colour-shape pairs held out), ``epochs`` passes in batches of ``batch_size`` (about
    20 s on a laptop CPU)."""

    pairs: int = 30_000
    width: int = 128
    tower: str = "cnn"
    loss: str = "clip"
    epochs: int = 3
    batch_size: int = 256
    lr: float = 4e-3
    seed: int = 0

    def __post_init__(self):
        _seeded(self)


@dataclass(frozen=True)
class ObjectivesRecipe:
    """Chapter 4b: the same image tower and data under three objectives (contrastive, bag of
    words, captioning: ``pairs`` pairs, ``epochs``, read on held-out pairs every ``eval_every``
    steps); then, on the first ``small_pairs`` of them, the contrastive loss at fixed
    ``temperatures`` (the modality gap) and softmax vs sigmoid at each of ``batch_sizes``, the
    learning rate scaled with the square root of the batch from ``lr`` at ``small_batch``."""

    pairs: int = 20_000
    epochs: int = 2
    batch_size: int = 256
    lr: float = 4e-3
    eval_every: int = 39
    test_pairs: int = 300
    small_pairs: int = 6_000
    small_batch: int = 128
    temperatures: tuple[float, ...] = (0.01, 0.1, 1.0)
    batch_sizes: tuple[int, ...] = (16, 128)
    seed: int = 0

    def __post_init__(self):
        _seeded(self)
        if self.small_pairs > self.pairs:
            raise ValueError(f"small_pairs ({self.small_pairs}) are the first of the {self.pairs} pairs")


# ---------------------------------------------------------------------------------------------
# Chapter 6: the same pretraining on one process and on two (the command line's arguments)
# ---------------------------------------------------------------------------------------------

DDP_SAME_LOSS = ("--pairs", "4000", "--steps", "40", "--batch-size", "128", "--tower", "vit", "--width", "32")
"""A ViT (no batch statistics), so 1 and 2 processes must give the same loss curve."""

DDP_THROUGHPUT = ("--pairs", "8000", "--steps", "40", "--batch-size", "256")
"""The book's CNN tower: the loss drifts with per-process batch norm; images per second, 1 vs 2."""


# ---------------------------------------------------------------------------------------------
# Chapter 5: transfer to new domains, and a new language
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TransferRecipe:
    """Chapter 5: chapter 4's image tower adapted to sketches and to sounds by each strategy of
    ``mmlib.transfer.STRATEGIES``, with ``ks`` labels per class drawn from ``per_class`` per
    class; ``steps`` of batches of ``batch_size`` at ``lr``; tested on ``test`` examples."""

    per_class: int = 100
    test: int = 1_000
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 64)
    steps: int = 80
    lr: float = 6e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        _seeded(self)


@dataclass(frozen=True)
class LitRecipe:
    """Chapter 5: a new Chinese text tower learns to meet chapter 4's image tower (``settings``:
    locked, unlocked, or both from scratch) on ``pairs`` Chinese pairs for ``epochs``."""

    pairs: int = 6_000
    test: int = 1_000
    epochs: int = 2
    batch_size: int = 256
    lr: float = 4e-3
    settings: tuple[str, ...] = ("locked", "unlocked", "scratch")
    seed: int = 0

    def __post_init__(self):
        _seeded(self)


# ---------------------------------------------------------------------------------------------
# Chapters 7, 7b, 7c: a multimodal LLM
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LanguageModelRecipe:
    """Chapter 7's language model and its text pretraining: a ``depth``-block decoder of width
    ``dim`` reads the world's chat text alone (``questions`` visual questions and
    ``descriptions`` descriptions, without their images) for ``steps`` steps."""

    dim: int = 128
    depth: int = 2
    heads: int = 4
    max_len: int = 48
    questions: int = 10_000
    descriptions: int = 0
    steps: int = 300
    batch_size: int = 128
    optim: Optimisation = Optimisation(lr=3e-3)


@dataclass(frozen=True)
class VisionLanguageRecipe:
    """Visual instruction tuning (chapter 7): chapter 4's CLIP image tower (frozen) -> a
    ``connector`` (``mmlib.vlm.CONNECTORS``, with ``connector_options``) -> the language model
    pretrained by ``lm``, tuned for ``steps`` on ``questions`` visual questions and
    ``descriptions`` descriptions. ``lora_rank`` > 0 tunes low-rank adapters instead of the
    LM's weights, scaled by ``lora_alpha`` / rank; ``lora_positions`` lets the LM's position
    embeddings learn beside them (chapter 7b). ``alignment_steps`` > 0 first runs LLaVA's stage 1:
    that many steps train the connector alone (the LM frozen) on ``alignment_descriptions``
    descriptions, before the ``steps`` of tuning (chapter 7c)."""

    connector: str = "instruction"
    connector_options: Mapping = field(default_factory=lambda: {"m": 4})
    lora_rank: int = 0
    lora_alpha: float = 8.0
    lora_positions: bool = False
    alignment_steps: int = 0
    alignment_descriptions: int = 10_000
    questions: int = 20_000
    descriptions: int = 0
    steps: int = 800
    batch_size: int = 128
    optim: Optimisation = Optimisation(lr=1e-3, weight_decay=0.01, clip_grad=None, lr_scale={"connector": 3.0})
    lm: LanguageModelRecipe = LanguageModelRecipe()
    seed: int = 0

    def __post_init__(self):
        _seeded(self)
        object.__setattr__(self, "connector_options", FrozenDict(self.connector_options))
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"lora_rank is a rank >= 1, or 0 for full tuning; got {self.lora_rank!r}")
        if not isinstance(self.alignment_steps, int) or self.alignment_steps < 0:
            raise ValueError(f"alignment_steps is a number of steps >= 0 (0: no stage 1); "
                             f"got {self.alignment_steps!r}")


VQA = VisionLanguageRecipe()
"""Chapter 7's model: the instruction-aware resampler (4 tokens), 800 steps on visual questions."""

DESCRIBER = VisionLanguageRecipe(
    connector="mlp", connector_options={"pool": 2}, descriptions=10_000, steps=400, batch_size=48,
    optim=replace(VQA.optim, lr=2e-3), lm=LanguageModelRecipe(descriptions=5_000, steps=200, batch_size=64))
"""Chapter 7b's model, which answers and describes: LLaVA-1.5's MLP on the 2 x 2-pooled grid,
questions mixed with descriptions. Shipped with mmlib for chapter 8 (``pretrained_describer``)."""

DESCRIBER_LORA = replace(DESCRIBER, lora_rank=4, optim=replace(DESCRIBER.optim, lr=1e-2, lr_scale={"connector": 0.6}))
"""Chapter 7b's LoRA run: the describer's recipe with rank-4 adapters instead of full tuning (a
larger learning rate for the adapters, the connector's kept near the full run's)."""

DESCRIBER_LORA_POSITIONS = replace(DESCRIBER_LORA, lora_positions=True)
"""Chapter 7b's test of one suspect: the LoRA run with the LM's position embeddings trainable."""

COMPARED = {"linear": ("linear", {"pool": 2}), "mlp": ("mlp", {"pool": 2}), "resampler": ("resampler", {"m": 4}),
            "instruction": ("instruction", {"m": 4}), "cross_attention": ("cross_attention", {})}
"""Chapter 7c's five connectors as (name, options): LLaVA's linear map and LLaVA-1.5's MLP on the
2 x 2-pooled grid (16 tokens), a resampler and the instruction-aware one (4), Flamingo's (0)."""

CONNECTOR_RECIPES = {label: replace(VQA, steps=600, connector=name, connector_options=options)
                     for label, (name, options) in COMPARED.items()}
"""Chapter 7c's comparison: chapter 7's recipe at one budget (600 steps) for each connector."""

_LLAVA = replace(CONNECTOR_RECIPES["mlp"], lm=replace(VQA.lm, descriptions=5_000))
LLAVA_RECIPES = {"average": _LLAVA,
                 "pixel shuffle": replace(_LLAVA, connector_options={"pool": 2, "merge": "stack"}),
                 "two stages": replace(_LLAVA, alignment_steps=200, steps=_LLAVA.steps - 200)}
"""Chapter 7c's two questions about LLaVA-1.5's MLP at the comparison's budget (600 steps), with
an LM whose text includes descriptions: what the 2 x 2 average costs (against stacking each
block's four features, a pixel shuffle) and whether LLaVA's two stages help (200 steps of the
connector alone on descriptions, then 400 of tuning, against 600 of tuning)."""


# ---------------------------------------------------------------------------------------------
# Chapter 8: text to image, judged exactly
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeRecipe:
    """Chapter 8's judge: a CNN of ``width`` channels trained on ``examples`` rendered 16-pixel
    scenes (a fraction ``two_objects`` of them with two objects) for ``steps`` steps."""

    examples: int = 12_000
    two_objects: float = 0.25
    width: int = 32
    steps: int = 800
    batch_size: int = 128
    lr: float = 5e-3
    seed: int = 0

    def __post_init__(self):
        _seeded(self)


@dataclass(frozen=True)
class GeneratorRecipe:
    """How the book's generator is trained: flow matching with a data-predicting U-Net on
    ``examples`` captioned scenes, batches of ``batch_size`` for ``steps`` steps, sampled from an
    exponential moving average of the weights (decay ``ema``). ``text``: 'trainable' (a small
    Transformer trained with the U-Net) or 'clip' (chapter 4's CLIP text tower, frozen)."""

    steps: int = 4_500
    batch_size: int = 64
    lr: float = 3e-3
    examples: int = 20_000
    two_objects: float = 0.25
    channels: tuple[int, int] = (16, 64)
    target: str = "data"
    ema: float = 0.99
    seed: int = 0
    text: str = "trainable"

    def __post_init__(self):
        _seeded(self)


# ---------------------------------------------------------------------------------------------
# Compared settings that are not training: how the trained models are asked
# ---------------------------------------------------------------------------------------------

TEMPERATURES = (0.0, 0.5, 1.0, 1.5)
"""Chapter 7b's decoding temperatures (hallucination against temperature)."""

GUIDANCE_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 5.0)
"""Chapter 8's classifier-free guidance weights (faithfulness against diversity)."""

SAMPLER_STEPS = (1, 2, 4, 8, 16)
"""Chapter 8's numbers of Euler steps (faithfulness against time)."""


def with_seed(recipes, seed: int):
    """``recipes`` (one recipe, or a dict of them) with ``seed`` instead of their own."""
    if isinstance(recipes, Mapping):
        return {name: replace(recipe, seed=seed) for name, recipe in recipes.items()}
    return replace(recipes, seed=seed)


__all__ = ["FusionRecipe", "ClipRecipe", "ObjectivesRecipe", "DDP_SAME_LOSS", "DDP_THROUGHPUT", "TransferRecipe", "LitRecipe", "LanguageModelRecipe",
           "VisionLanguageRecipe", "VQA", "DESCRIBER", "DESCRIBER_LORA", "DESCRIBER_LORA_POSITIONS", "COMPARED", "CONNECTOR_RECIPES", "LLAVA_RECIPES",
           "JudgeRecipe", "GeneratorRecipe", "TEMPERATURES", "GUIDANCE_WEIGHTS", "SAMPLER_STEPS", "with_seed",
           "PREFERENCE_METHODS", "PREFERENCE_REWARDS", "PreferenceRecipe", "CooccurrenceRecipe", "COOCCURRENCE",
           "NegativesRecipe", "NEGATIVES", "ALIGN", "ALIGN_METHODS", "DPO_BETAS", "BEST_OF", "DECODINGS"]


# Chapter 9's recipes live in mmlib/recipes/alignment.py (this module would pass 400 lines) and
# are read from here like every other: ``from mmlib.recipes import ALIGN``.
from mmlib.recipes.alignment import (ALIGN, ALIGN_METHODS, BEST_OF, COOCCURRENCE, DECODINGS, DPO_BETAS,  # noqa: E402
                                     NEGATIVES, PREFERENCE_METHODS, PREFERENCE_REWARDS, CooccurrenceRecipe,
                                     NegativesRecipe, PreferenceRecipe)
