"""Training a vision-language model by its recipe (chapters 7, 7b, 7c): the language model's text
pretraining, the model assembled around chapter 4's frozen image tower, and visual instruction
tuning. Chapter 7's model and chapter 7b's describer, with their language models, are trained
once by ``benchmarks/train_vlm.py`` and ship with mmlib (``SHIPPED``), so that the chapters
spend their minute on what they teach; chapter 8 reads its generated images with the describer.

Every function takes a ``mmlib.recipes.VisionLanguageRecipe``. Its seed s draws the data (tuning
data from seeds 10 s and 10 s + 2, the LM's text from 10 s + 1 and 10 s + 4, stage 1's
descriptions from 10 s + 3), the language
model's initialisation (s), the connector's (s + 1) and the batches; the caller's random
numbers are left as they were.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn

from mmlib import shipped
from mmlib.data import WorldDataset
from mmlib.lm import LanguageModel
from mmlib.recipes import DESCRIBER, VQA, VisionLanguageRecipe
from mmlib.train import History, default_device, fit_steps
from mmlib.vlm.chat import chat_tokenizer, description_data, instruction_data, mix
from mmlib.vlm.connectors import make_connector
from mmlib.vlm.lora import add_lora
from mmlib.vlm.model import VisionLanguageModel


def _chat(questions: int, descriptions: int, seed: int, description_seed: int, tokenizer) -> WorldDataset:
    """``questions`` visual questions (seed ``seed``), mixed (seed ``seed``) with
    ``descriptions`` descriptions (seed ``description_seed``) when there are any."""
    asked = instruction_data(questions, seed=seed, tokenizer=tokenizer)
    if not descriptions:
        return asked
    return mix(asked, description_data(descriptions, seed=description_seed, tokenizer=tokenizer), seed=seed)


def tuning_data(recipe: VisionLanguageRecipe, tokenizer=None) -> WorldDataset:
    """The images with their exchanges that ``recipe`` tunes on."""
    s = 10 * recipe.seed
    return _chat(recipe.questions, recipe.descriptions, s, s + 2, tokenizer or chat_tokenizer())


def text_data(recipe: VisionLanguageRecipe, tokenizer=None) -> WorldDataset:
    """The chat text the language model of ``recipe`` reads alone (its images unused)."""
    s = 10 * recipe.seed
    return _chat(recipe.lm.questions, recipe.lm.descriptions, s + 1, s + 4, tokenizer or chat_tokenizer())


def alignment_data(recipe: VisionLanguageRecipe, tokenizer=None) -> WorldDataset:
    """The descriptions that LLaVA's stage 1 of ``recipe`` trains the connector on."""
    return description_data(recipe.alignment_descriptions, seed=10 * recipe.seed + 3,
                            tokenizer=tokenizer or chat_tokenizer())


def language_model(recipe: VisionLanguageRecipe, tokenizer=None) -> LanguageModel:
    """An untrained language model of ``recipe.lm``'s shape, over the chat tokenizer."""
    tokenizer = tokenizer or chat_tokenizer()
    lm = recipe.lm
    return LanguageModel(len(tokenizer), lm.dim, lm.depth, lm.heads, lm.max_len, pad_id=tokenizer.pad_id)


def pretrain_language_model(recipe: VisionLanguageRecipe, *, device=None, progress: bool = True
                            ) -> tuple[LanguageModel, History]:
    """The language model of ``recipe``, pretrained on ``text_data`` (next-token prediction,
    ``LanguageModel.loss``) by ``recipe.lm``. Returns it and its ``History``."""
    tokenizer = chat_tokenizer()
    text = text_data(recipe, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        lm = language_model(recipe, tokenizer)
        history = fit_steps(lm, text, steps=recipe.lm.steps, batch_size=recipe.lm.batch_size,
                            optim=recipe.lm.optim, seed=recipe.seed, device=device, progress=progress,
                            desc="language model")
    return lm, history


def vision_language_model(recipe: VisionLanguageRecipe, vision: nn.Module, lm: LanguageModel
                          ) -> VisionLanguageModel:
    """Copies of ``vision`` (an image tower; frozen inside) and ``lm`` joined by ``recipe``'s
    connector, with LoRA adapters on the LM when ``recipe.lora_rank`` > 0."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed + 1)
        connector = make_connector(recipe.connector, vision.dim, lm.dim, **recipe.connector_options)
        lm = copy.deepcopy(lm)
        if recipe.lora_rank:
            add_lora(lm, r=recipe.lora_rank, alpha=recipe.lora_alpha)
            lm.positions.requires_grad_(recipe.lora_positions)
    return VisionLanguageModel(copy.deepcopy(vision), connector, lm, chat_tokenizer())


def tune(model: VisionLanguageModel, data: WorldDataset, recipe: VisionLanguageRecipe, *, device=None,
         progress: bool = True, desc: str = "tuning") -> History:
    """Visual instruction tuning: ``recipe.steps`` steps on ``data`` (``tuning_data(recipe)``, or
    a copy that carries cached region features), only the assistant's tokens in the loss."""
    with torch.random.fork_rng(devices=[]):
        return fit_steps(model, data, steps=recipe.steps, batch_size=recipe.batch_size, optim=recipe.optim,
                         seed=recipe.seed, device=device, progress=progress, desc=desc)


def align(model: VisionLanguageModel, data: WorldDataset, recipe: VisionLanguageRecipe, *, device=None,
          progress: bool = True) -> History:
    """LLaVA's stage 1, feature alignment: ``recipe.alignment_steps`` steps on ``data``
    (``alignment_data(recipe)``, or a copy with cached region features) that train the connector
    alone; the language model stays frozen, and trainable again afterwards."""
    if recipe.alignment_steps < 1:
        raise ValueError("this recipe has no stage 1 (alignment_steps = 0): call tune alone")
    learning = [p for p in model.lm.parameters() if p.requires_grad]
    for p in learning:
        p.requires_grad_(False)
    try:
        with torch.random.fork_rng(devices=[]):
            return fit_steps(model, data, steps=recipe.alignment_steps, batch_size=recipe.batch_size,
                             optim=recipe.optim, seed=recipe.seed, device=device, progress=progress,
                             desc="stage 1: connector")
    finally:
        for p in learning:
            p.requires_grad_(True)


def train_vision_language_model(recipe: VisionLanguageRecipe, *, clip: nn.Module | None = None,
                                lm: LanguageModel | None = None, device=None, progress: bool = True
                                ) -> VisionLanguageModel:
    """The whole recipe: pretrain the LM (unless ``lm``, already pretrained by this recipe, is
    given), assemble a copy of it with a frozen copy of ``clip``'s image tower (default: chapter
    4's ``pretrained_clip()``), align (LLaVA's stage 1, when the recipe has one), tune. Returns
    the model for evaluation."""
    from mmlib.pretrain import pretrained_clip

    clip = clip if clip is not None else pretrained_clip(device=device, progress=progress)
    if lm is None:
        lm, _ = pretrain_language_model(recipe, device=device, progress=progress)
    model = vision_language_model(recipe, clip.image_encoder, lm)
    if recipe.alignment_steps:
        align(model, alignment_data(recipe), recipe, device=device, progress=progress)
    tune(model, tuning_data(recipe), recipe, device=device, progress=progress)
    return model.eval()


def describer_of(recipe: VisionLanguageRecipe, *, device=None, progress: bool = True) -> VisionLanguageModel:
    """Chapter 7b's describer as ``recipe`` trains it: the shipped one for ``DESCRIBER`` itself
    (seed 0), else trained afresh (``train_describer``, about a minute)."""
    if recipe == DESCRIBER:
        return pretrained_describer(device=device)
    return train_describer(recipe, device=device, progress=progress)


def tune_afresh(recipe: VisionLanguageRecipe, data: WorldDataset, *, clip: nn.Module | None = None, device=None,
                progress: bool = True, desc: str = "tuning") -> VisionLanguageModel:
    """``recipe``'s model tuned on ``data`` instead of its own tuning data (chapter 9 changes
    the data and keeps the rest): its text-pretrained language model (the shipped one where
    mmlib ships it, else pretrained afresh), a frozen copy of ``clip``'s image tower (default:
    chapter 4's), ``recipe.steps`` steps of tuning. About half a minute."""
    from mmlib.pretrain import pretrained_clip

    shipped_lm = any(_lm_recipe(r) == _lm_recipe(recipe) for r in SHIPPED.values())
    lm = (pretrained_language_model(recipe, device=device) if shipped_lm
          else pretrain_language_model(recipe, device=device, progress=progress)[0])
    clip = clip if clip is not None else pretrained_clip(device=device, progress=progress)
    model = vision_language_model(recipe, clip.image_encoder, lm)
    tune(model, data, recipe, device=device, progress=progress, desc=desc)
    return model.eval()


def describer_on_rewritten_data(recipe, rewrite, *, clip: nn.Module | None = None, device=None,
                                progress: bool = True, desc: str = "tuning") -> VisionLanguageModel:
    """Chapter 9's describers whose data a ``recipe`` rewrites in a ``recipe.share`` of it
    (``CooccurrenceRecipe``, ``NegativesRecipe``): the shipped describer where nothing is
    rewritten and the rest is the shipped recipe (share 0 at seed 0: the same data, the same
    weights), else ``tune_afresh(recipe.describer, rewrite(recipe))``."""
    if recipe.share == 0 and recipe.describer == DESCRIBER:
        return pretrained_describer(device=device)
    return tune_afresh(recipe.describer, rewrite(recipe), clip=clip, device=device, progress=progress, desc=desc)


def train_describer(recipe: VisionLanguageRecipe = DESCRIBER, *, clip: nn.Module | None = None, device=None,
                    progress: bool = True) -> VisionLanguageModel:
    """Chapter 7b's describer trained by ``recipe`` (``train_vision_language_model``)."""
    return train_vision_language_model(recipe, clip=clip, device=device, progress=progress)


# ---------------------------------------------------------------------------------------------
# Shipped models: trained once by benchmarks/train_vlm.py, loaded by the chapters
# ---------------------------------------------------------------------------------------------

SHIPPED = {"vqa": VQA, "describer": DESCRIBER}
"""The recipes whose models ship with mmlib, by the name of their weights: chapter 7's model
(``vqa.pt``) and chapter 7b's describer (``describer.pt``), each with its text-pretrained
language model before tuning (``vqa-lm.pt``, ``describer-lm.pt``)."""


def retrain_hint(name: str) -> str:
    """The command that trains the shipped weights ``name`` ('vqa', 'describer', 'all') again."""
    return f"python benchmarks/train_vlm.py {name}"


RETRAIN_DESCRIBER = retrain_hint("describer")


def _lm_recipe(recipe: VisionLanguageRecipe) -> dict:
    """What the language model's pretraining depends on: its recipe and the seed."""
    return {"lm": asdict(recipe.lm), "seed": recipe.seed}


def _shipped_name(recipe: VisionLanguageRecipe, same, path=None) -> str:
    """The name of the shipped model whose recipe is ``same`` as ``recipe``; with an explicit
    ``path``, the name only serves the hint ('all' when none matches)."""
    name = next((n for n, r in SHIPPED.items() if same(r, recipe)), None)
    if name is None and path is None:
        raise ValueError(f"no shipped model has this recipe; mmlib ships {sorted(SHIPPED)} "
                         "(mmlib.vlm.SHIPPED): train it with train_vision_language_model(recipe)")
    return name or "all"


def pretrained_vision_language_model(recipe: VisionLanguageRecipe, *, path=None, device=None
                                     ) -> VisionLanguageModel:
    """The model of a recipe in ``SHIPPED`` (chapter 7's ``VQA``, chapter 7b's ``DESCRIBER``),
    loaded from the weights shipped with mmlib: what ``train_vision_language_model(recipe)``
    returns, its frozen copy of chapter 4's image tower included (so it matches on any machine).
    It reads 32-pixel images. A missing file or one trained by another recipe raises a
    ValueError that says how to train it again."""
    from mmlib.pretrain import image_tower

    name = _shipped_name(recipe, lambda a, b: a == b, path)
    model = vision_language_model(recipe, image_tower(), language_model(recipe))
    shipped.load(model, path if path is not None else shipped.path_of(name), asdict(recipe), retrain_hint(name))
    return model.to(device or default_device()).eval()


def pretrained_language_model(recipe: VisionLanguageRecipe, *, path=None, device=None) -> LanguageModel:
    """The language model that ``pretrain_language_model(recipe)`` trains, before any image,
    loaded from the weights shipped with mmlib: for any recipe whose ``lm`` and seed are those
    of a recipe in ``SHIPPED`` (chapter 7c's connectors share chapter 7's). Errors as
    ``pretrained_vision_language_model``."""
    same = lambda a, b: _lm_recipe(a) == _lm_recipe(b)  # noqa: E731
    name = _shipped_name(recipe, same, path)
    lm = language_model(recipe)
    shipped.load(lm, path if path is not None else shipped.path_of(f"{name}-lm"), _lm_recipe(recipe),
                 retrain_hint(name))
    return lm.to(device or default_device()).eval()


def pretrained_describer(recipe: VisionLanguageRecipe = DESCRIBER, *, path=None, device=None
                         ) -> VisionLanguageModel:
    """Chapter 7b's describer (``pretrained_vision_language_model(DESCRIBER)``): chapter 8 reads
    its generated images with it."""
    return pretrained_vision_language_model(recipe, path=path, device=device)


def shipped_record(recipe: VisionLanguageRecipe, part: str = "model") -> dict:
    """What the shipped weights of ``recipe`` say about their training: 'recipe', 'seconds'
    (of the tuning for part='model', of the text pretraining for part='lm'), 'torch', 'cpus'."""
    if part not in ("model", "lm"):
        raise ValueError(f"part is 'model' or 'lm', got {part!r}")
    name = _shipped_name(recipe, lambda a, b: a == b)
    return shipped.record(shipped.path_of(name if part == "model" else f"{name}-lm"), retrain_hint(name))


def describer_record() -> dict:
    """``shipped_record(DESCRIBER)``."""
    return shipped_record(DESCRIBER)


__all__ = ["tuning_data", "text_data", "alignment_data", "align", "language_model", "pretrain_language_model", "vision_language_model", "tune",
           "train_vision_language_model", "describer_of", "tune_afresh", "describer_on_rewritten_data", "train_describer", "SHIPPED", "retrain_hint", "RETRAIN_DESCRIBER",
           "pretrained_vision_language_model", "pretrained_language_model", "pretrained_describer",
           "shipped_record", "describer_record"]
