"""Reward hacking, measured (chapter 9b): best-of-n against a learned reward, judged by the world.

A reward model stands in for what people want, and optimised hard enough a policy finds where the
stand-in is wrong: the proxy reward keeps rising while the true one rises, then falls (Gao,
Schulman & Hilton 2023). The simplest optimiser is best-of-n: sample n answers, keep the one the
reward scores highest; n is a dial of optimisation pressure, its KL from the sampler at most
log n - (n - 1) / n (``mmlib.alignment.best_of_n_kl``). Our learned reward takes DPO's form,
learned from the preference pairs alone: a tuned policy's score beta log pi(y|x) / pi_ref(y|x),
which for a policy tuned by DPO's loss alone is its implicit reward (Rafailov et al. 2023).
``sampled_rewards`` samples descriptions of test scenes from the reference and scores each by
that proxy and by the truth (object F1, exact); ``overoptimisation`` picks the best of the
first n by either, for each n.
"""

from __future__ import annotations

import numpy as np
import torch

from mmlib.alignment import best_of_n, best_of_n_kl
from mmlib.data import WorldDataset
from mmlib.vlm.evaluation import chair, description_scores
from mmlib.vlm.model import VisionLanguageModel
from mmlib.vlm.preference import description_log_probs, description_rewards, sample_descriptions


def sampled_rewards(reference: VisionLanguageModel, policy: VisionLanguageModel, data: WorldDataset,
                    samples: int, beta: float, seed: int = 0) -> dict:
    """``samples`` descriptions of each scene of ``data``, sampled from ``reference`` at T = 1
    (generator seeded by ``seed``), each scored twice: 'proxy', ``policy``'s score in DPO's form
    beta (log pi - log pi_ref) (NaN where too long to score), and 'truth', its object F1 against
    the scene. Returns 'descriptions' (one list per round) and the two scores as tensors
    (samples, scenes)."""
    if samples < 1 or not beta > 0:
        raise ValueError(f"need samples >= 1 and beta > 0; got {samples} and {beta}")
    said = sample_descriptions(reference, data, samples, 1.0, seed)
    data = reference.with_regions(data, dtype=torch.float32)
    proxy = torch.stack([beta * (description_log_probs(policy, data, s) - description_log_probs(reference, data, s))
                         for s in said])
    truth = torch.from_numpy(np.stack([description_rewards(s, data.scenes, "f1") for s in said])).float()
    return {"descriptions": said, "proxy": proxy, "truth": truth}


def overoptimisation(reference: VisionLanguageModel, policy: VisionLanguageModel, data: WorldDataset, ns,
                     beta: float, seed: int = 0) -> dict[int, dict[str, float]]:
    """For each n of ``ns``: best-of-n of ``reference``'s descriptions of ``data``'s scenes by
    ``policy``'s score (``sampled_rewards``, max(ns) samples), and what it buys:
    'KL bound' (``best_of_n_kl``), 'proxy' (the mean score of the picks), 'f1' and
    'chair_i' (``description_scores``, ``chair``: the truth) and 'oracle f1', the F1 of best-of-n
    by the truth itself."""
    if not len(ns) or min(ns) < 1:
        raise ValueError(f"ns are numbers of samples >= 1, got {ns!r}")
    scored = sampled_rewards(reference, policy, data, max(ns), beta, seed)
    said, proxy, truth = scored["descriptions"], scored["proxy"], scored["truth"]
    columns = torch.arange(len(data))
    out = {}
    for n in ns:
        picked, best = best_of_n(proxy, n), best_of_n(truth, n)
        text = [said[k][i] for i, k in enumerate(picked.tolist())]
        oracle = [said[k][i] for i, k in enumerate(best.tolist())]
        out[n] = {"KL bound": best_of_n_kl(n), "proxy": float(proxy[picked, columns].nanmean()),
                  "f1": description_scores(text, data.scenes)["f1"], "chair_i": chair(text, data.scenes)["chair_i"],
                  "oracle f1": description_scores(oracle, data.scenes)["f1"]}
    return out


__all__ = ["sampled_rewards", "overoptimisation"]
