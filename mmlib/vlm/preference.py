"""Preference tuning of the describer on its own samples, scored by the world (chapter 9).

RLHF-V and HA-DPO build preference pairs against hallucination with human or GPT-4
corrections; here the world is the annotator. ``preference_pairs`` samples several descriptions
of each training scene from the describer, scores each exactly (``description_rewards``) and
keeps the best and the worst of a scene as a pair, with the frozen reference's log-probabilities
of both. ``PreferenceTuning`` wraps a policy with the loss of a recipe's method (DPO,
DPO plus the chosen answers' likelihood, or best-of-n fine-tuning), so that training runs
through the book's one loop (``mmlib.train.fit_steps``); ``tune_preferences`` does it all by a
``mmlib.recipes.PreferenceRecipe``. ``kl_from_reference`` measures how far tuning moved the
model; ``alignment_scores`` measures what it did to hallucination.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmlib.alignment import dpo_loss, sequence_log_probs
from mmlib.data import IMAGE, TOKENS, WorldDataset
from mmlib.recipes import PREFERENCE_REWARDS, PreferenceRecipe
from mmlib.train import History, fit_steps
from mmlib.vlm.chat import DESCRIBE, chat_sequences, description_data
from mmlib.vlm.evaluation import ask_pope, chair, chair_by_position, describe, description_scores, mentioned, sampling_generator
from mmlib.vlm.model import REGIONS, VisionLanguageModel
from mmlib.vlm.tuning import describer_of

PAIR_SEED_OFFSET = 5
"""A preference recipe of seed s describes the training scenes of seed 10 s + 5 (the describer's
own data use 10 s to 10 s + 4)."""


def description_rewards(descriptions, scenes, reward: str = "f1") -> np.ndarray:
    """Each description's exact score against its scene: 'f1', the object F1 (colour and shape
    both right; 0 when nothing readable is named), or 'precision', the share of the objects
    named that are in the scene (1 when none is named: nothing wrong was said)."""
    if reward not in PREFERENCE_REWARDS:
        raise ValueError(f"unknown reward {reward!r}: choose one of {PREFERENCE_REWARDS}")
    if len(descriptions) != len(scenes):
        raise ValueError(f"need one description per scene: got {len(descriptions)} for {len(scenes)} scenes")
    out = np.empty(len(scenes))
    for i, text in enumerate(descriptions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        said = set(mentioned(text))
        right = len(said & present)
        if reward == "precision":
            out[i] = right / len(said) if said else 1.0
        else:
            out[i] = 2 * right / (len(said) + len(present))
    return out


def answer_log_probs(model: VisionLanguageModel, tokens: torch.Tensor, starts: torch.Tensor,
                     regions: torch.Tensor) -> torch.Tensor:
    """log pi(answer | image, instruction) of each chat sequence ``tokens`` (B, T), its answer
    starting at ``starts`` (B,), given the vision encoder's ``regions`` (B, N, d): the sum of
    the answer's token log-probabilities, ``<eos>`` included. Returns (B,)."""
    if len(tokens) != len(starts) or len(tokens) != len(regions):
        raise ValueError(f"need one start and one image per sequence: {len(tokens)} sequences, "
                         f"{len(starts)} starts, {len(regions)} images")
    logits = model(None, tokens, regions)[:, :-1]
    targets = tokens[:, 1:]
    position = torch.arange(targets.shape[1], device=tokens.device)[None]
    answer = (position >= starts[:, None] - 1) & (targets != model.tokenizer.pad_id)
    return sequence_log_probs(logits, targets, answer)


def _sequences(model: VisionLanguageModel, descriptions) -> tuple[torch.Tensor, torch.Tensor]:
    return chat_sequences(model.tokenizer, [DESCRIBE] * len(descriptions), descriptions)


def _pad(tokens: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    return F.pad(tokens, (0, width - tokens.shape[1]), value=pad_id)


@torch.no_grad()
def _log_probs(model: VisionLanguageModel, tokens, starts, regions, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([answer_log_probs(model, tokens[part], starts[part], regions[part])
                      for part in torch.arange(len(tokens)).split(batch_size)])


def sample_descriptions(model: VisionLanguageModel, data: WorldDataset, samples: int, temperature: float,
                        seed: int = 0) -> list[list[str]]:
    """``samples`` descriptions of each of ``data``'s scenes at ``temperature`` (one list per
    round of sampling), from one generator seeded with ``seed``."""
    generator = sampling_generator(model, seed)
    return [describe(model, data, temperature=temperature, generator=generator) for _ in range(samples)]


def preference_pairs(model: VisionLanguageModel, recipe: PreferenceRecipe) -> WorldDataset:
    """The recipe's preference pairs from ``model``'s own samples: for each training scene where
    the best and the worst of its ``recipe.samples`` descriptions score differently (and both
    fit the model's context), labels 'chosen' and 'rejected' (chat sequences, padded alike),
    their answer starts, their scores, and the frozen reference's (``model``'s)
    log-probabilities 'reference_chosen', 'reference_rejected'; 'regions' holds the frozen
    vision encoder's features. ``texts`` are the chosen descriptions."""
    data = description_data(recipe.scenes, seed=10 * recipe.seed + PAIR_SEED_OFFSET, tokenizer=model.tokenizer)
    said = sample_descriptions(model, data, recipe.samples, recipe.temperature, recipe.seed)
    scores = np.stack([description_rewards(s, data.scenes, recipe.reward) for s in said])  # (samples, scenes)
    best, worst = scores.argmax(0), scores.argmin(0)
    chosen = [said[k][i] for i, k in enumerate(best)]
    rejected = [said[k][i] for i, k in enumerate(worst)]
    chosen_tokens, chosen_starts = _sequences(model, chosen)
    rejected_tokens, rejected_starts = _sequences(model, rejected)
    visual = model.prefix(data.float_images()[:1], chosen_tokens[:1]).shape[1]
    room = model.lm.max_len - visual
    longest = torch.maximum((chosen_tokens != model.tokenizer.pad_id).sum(1),
                            (rejected_tokens != model.tokenizer.pad_id).sum(1))
    keep = torch.from_numpy(scores.max(0) > scores.min(0)) & (longest <= room)
    if not keep.any():
        raise ValueError("no scene gave two descriptions of different scores: sample more "
                         "(samples=) or at a higher temperature")
    rows = torch.nonzero(keep).flatten()
    width = int(longest[rows].max())
    pad = model.tokenizer.pad_id
    labels = {"chosen": _pad(chosen_tokens, width, pad)[rows], "chosen_start": chosen_starts[rows],
              "rejected": _pad(rejected_tokens, width, pad)[rows], "rejected_start": rejected_starts[rows],
              "chosen_score": torch.from_numpy(scores.max(0))[rows].float(),
              "rejected_score": torch.from_numpy(scores.min(0))[rows].float()}
    pairs = WorldDataset(data.images[rows], labels, [chosen[i] for i in rows.tolist()],
                         scenes=data.scenes[rows.numpy()], tokenizer=model.tokenizer)
    pairs = model.with_regions(pairs, dtype=torch.float32)
    regions = pairs.labels[REGIONS]
    pairs.labels["reference_chosen"] = _log_probs(model, labels["chosen"], labels["chosen_start"], regions)
    pairs.labels["reference_rejected"] = _log_probs(model, labels["rejected"], labels["rejected_start"], regions)
    return pairs


def pair_answers(pairs: WorldDataset, which: str = "rejected") -> list[str]:
    """The 'chosen' or 'rejected' descriptions of ``preference_pairs``, as text."""
    if which not in ("chosen", "rejected"):
        raise ValueError(f"which is 'chosen' or 'rejected', got {which!r}")
    tokens, starts = pairs.labels[which], pairs.labels[f"{which}_start"]
    return [pairs.tokenizer.decode(row[start:]) for row, start in zip(tokens.tolist(), starts.tolist())]


class PreferenceTuning(nn.Module):
    """A policy (a ``VisionLanguageModel``) with the loss of a preference method, for
    ``fit_steps`` on ``preference_pairs``: 'dpo' (``dpo_loss`` with strength ``beta``),
    'dpo+nll' (that plus the tuning loss of the chosen answers), 'best-of-n' (the tuning loss of
    the chosen answers alone). Logs DPO's reward accuracy and margin for the DPO methods."""

    def __init__(self, policy: VisionLanguageModel, method: str, beta: float = 0.1):
        super().__init__()
        PreferenceRecipe(method=method, beta=beta)  # the recipe's checks, with their messages
        self.policy, self.method, self.beta = policy, method, beta

    def _tuning_loss(self, batch: dict) -> torch.Tensor:
        chosen = {IMAGE: batch[IMAGE], TOKENS: batch["chosen"], "answer_start": batch["chosen_start"],
                  REGIONS: batch[REGIONS]}
        return self.policy.loss(chosen)["loss"]

    def loss(self, batch: dict) -> dict:
        if self.method == "best-of-n":
            return {"loss": self._tuning_loss(batch)}
        n, regions = len(batch["chosen"]), batch[REGIONS]
        tokens = torch.cat([batch["chosen"], batch["rejected"]])
        starts = torch.cat([batch["chosen_start"], batch["rejected_start"]])
        log_probs = answer_log_probs(self.policy, tokens, starts, torch.cat([regions, regions]))
        chosen, rejected = log_probs[:n], log_probs[n:]
        value = dpo_loss(chosen, rejected, batch["reference_chosen"], batch["reference_rejected"], self.beta)
        margin = ((chosen - batch["reference_chosen"]) - (rejected - batch["reference_rejected"])).detach()
        if self.method == "dpo+nll":
            value = value + self._tuning_loss(batch)
        return {"loss": value, "reward_accuracy": (margin > 0).float().mean(), "margin": self.beta * margin.mean()}


def describer_for(recipe: PreferenceRecipe, *, device=None, progress: bool = True) -> VisionLanguageModel:
    """The describer that ``recipe`` tunes, ``describer_of(recipe.describer)``: the shipped one
    at seed 0, else trained (about a minute)."""
    return describer_of(recipe.describer, device=device, progress=progress)


def tune_preferences(recipe: PreferenceRecipe, model: VisionLanguageModel | None = None,
                     pairs: WorldDataset | None = None, *, device=None, progress: bool = True
                     ) -> tuple[VisionLanguageModel, History, WorldDataset]:
    """A copy of ``model`` (default: ``describer_for(recipe)``) tuned by ``recipe`` on ``pairs``
    (default: ``preference_pairs(model, recipe)``; pass them to compare methods on the same
    pairs). Returns the tuned model (in evaluation mode), its ``History`` and the pairs."""
    model = model if model is not None else describer_for(recipe, device=device, progress=progress)
    pairs = pairs if pairs is not None else preference_pairs(model, recipe)
    policy = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        history = fit_steps(PreferenceTuning(policy, recipe.method, recipe.beta), pairs, steps=recipe.steps,
                            batch_size=recipe.batch_size, optim=recipe.optim, seed=recipe.seed, device=device,
                            progress=progress, desc=recipe.method)
    return policy.eval(), history, pairs


def log_prob_shift(policy: VisionLanguageModel, pairs: WorldDataset) -> dict[str, float]:
    """How tuning moved the answers of ``pairs``: the mean of log pi(y|x) - log pi_ref(y|x) over
    the chosen answers ('chosen') and over the rejected ones ('rejected'), and the share of pairs
    whose chosen answer became less likely ('chosen fell'). DPO's margin is their difference,
    which grows even when both fall."""
    labels = pairs.labels
    chosen = _log_probs(policy, labels["chosen"], labels["chosen_start"], labels[REGIONS]) - labels["reference_chosen"]
    rejected = (_log_probs(policy, labels["rejected"], labels["rejected_start"], labels[REGIONS])
                - labels["reference_rejected"])
    return {"chosen": float(chosen.mean()), "rejected": float(rejected.mean()),
            "chosen fell": float((chosen < 0).float().mean())}


@torch.no_grad()
def description_log_probs(model: VisionLanguageModel, data: WorldDataset, descriptions) -> torch.Tensor:
    """log pi(y | image, "what is in the image ?") of one description y per scene of ``data``,
    summed over its tokens and ``<eos>``; NaN where a description is too long for the model's
    context (it could not have been generated whole). Returns (scenes,)."""
    if len(descriptions) != len(data):
        raise ValueError(f"need one description per scene: got {len(descriptions)} for {len(data)} scenes")
    tokens, starts = _sequences(model, descriptions)
    regions = (data.labels[REGIONS] if REGIONS in data.labels
               else model.with_regions(data, dtype=torch.float32).labels[REGIONS])
    room = model.lm.max_len - model.prefix(None, tokens[:1], regions[:1]).shape[1]
    lengths = (tokens != model.tokenizer.pad_id).sum(1)
    fits = lengths <= room
    out = torch.full((len(descriptions),), float("nan"))
    if fits.any():
        width = int(lengths[fits].max())
        out[fits] = _log_probs(model, tokens[fits][:, :width], starts[fits], regions[fits])
    return out


@torch.no_grad()
def kl_from_reference(policy: VisionLanguageModel, reference: VisionLanguageModel, data: WorldDataset,
                      temperature: float = 1.0, seed: int = 0) -> float:
    """KL(policy || reference) per description, estimated on ``data``'s scenes: the mean of
    log pi(y) - log pi_ref(y) over one description y sampled from the policy per scene, at
    ``temperature`` (1: the policy itself). Descriptions too long to score are left out."""
    said = describe(policy, data, temperature=temperature, generator=sampling_generator(policy, seed))
    data = policy.with_regions(data, dtype=torch.float32)
    gap = description_log_probs(policy, data, said) - description_log_probs(reference, data, said)
    return float(gap.nanmean())


def alignment_scores(model: VisionLanguageModel, described: WorldDataset, asked: WorldDataset,
                     seed: int = 0) -> dict[str, float]:
    """What chapter 9 measures of a describer: object F1 and CHAIR_i of its descriptions of
    ``described``'s scenes, greedy (T = 0) and sampled (T = 1, generator seeded by ``seed``),
    CHAIR_i of the first, second and third object named at T = 1 ('made up, object k'; LURE's
    position factor), and POPE-adversarial accuracy on ``asked``'s scenes."""
    out = {}
    for t in (0.0, 1.0):
        sampling = {"temperature": t, "generator": sampling_generator(model, seed)} if t else {}
        said = describe(model, described, **sampling)
        out[f"f1, T = {t:g}"] = description_scores(said, described.scenes)["f1"]
        out[f"chair_i, T = {t:g}"] = chair(said, described.scenes)["chair_i"]
    by_position = chair_by_position(said, described.scenes)
    for k in (1, 2, 3):
        out[f"made up, object {k}"] = by_position[k]["made_up"] if k in by_position else float("nan")
    out["pope_adv"] = ask_pope(model, asked, "adversarial")["accuracy"]
    return out


__all__ = ["PAIR_SEED_OFFSET", "description_rewards", "answer_log_probs", "sample_descriptions", "preference_pairs", "pair_answers",
           "PreferenceTuning", "describer_for", "tune_preferences", "description_log_probs", "kl_from_reference", "log_prob_shift",
           "alignment_scores"]
