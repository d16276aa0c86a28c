"""Preference tuning as plain functions of log-probabilities: the DPO loss, its implicit reward, best-of-n (chapter 9).

InstructGPT aligned GPT-3 in three steps: supervised tuning on demonstrations, a reward model
fitted to labellers' rankings, then PPO against that reward with a KL penalty that keeps the
policy near the tuned model (Ouyang et al. 2022). Direct preference optimisation (Rafailov et
al. 2023) starts from the same KL-regularised objective, max E[r(x, y)] - beta KL(pi || pi_ref),
whose optimal policy is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x). Solved for the
reward, r(x, y) = beta log [pi*(y|x) / pi_ref(y|x)] + beta log Z(x); in the Bradley-Terry
probability that y_w is preferred to y_l, sigma(r(x, y_w) - r(x, y_l)), the partition function
Z(x) cancels. What is left is a loss on the policy alone, with no reward model and no sampling
while training:

    L = -log sigma(beta [log (pi(y_w|x) / pi_ref(y_w|x)) - log (pi(y_l|x) / pi_ref(y_l|x))])

``sequence_log_probs`` sums a model's token log-probabilities over the answer; ``dpo_loss`` and
``implicit_rewards`` take those sums, for the policy and the frozen reference. ``best_of_n``
keeps, of n sampled answers, the one a reward scores highest, the simplest way to optimise
against a reward; ``best_of_n_kl`` is how far that moves from the sampler (Stiennon et al. 2020).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def sequence_log_probs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) per sequence: the log-probabilities of ``targets`` (B, T) under ``logits``
    (B, T, V), summed where ``mask`` (B, T) is True (the answer's tokens). Returns (B,). The
    logits must already be aligned with the targets: ``logits[:, j]`` predicts ``targets[:, j]``
    (for a language model's outputs, drop the last position and the first token)."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(f"expected logits (B, T, V) with targets and mask (B, T); got {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)} and {tuple(mask.shape)}")
    picked = logits.log_softmax(-1).gather(2, targets.unsqueeze(-1)).squeeze(-1)
    return (picked * mask.to(picked.dtype)).sum(1)


def _check(beta: float, *log_probs: torch.Tensor) -> None:
    if not beta > 0:
        raise ValueError(f"beta is the strength of the KL constraint, a number > 0; got {beta!r}")
    shapes = {tuple(t.shape) for t in log_probs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError("expected four log-probability vectors of one shape (B,): policy and reference, "
                         f"chosen and rejected; got shapes {[tuple(t.shape) for t in log_probs]}")
    if not log_probs[0].numel():
        raise ValueError("an empty batch of preference pairs has no loss")


def implicit_rewards(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
                     reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The rewards DPO's policy implies, beta log [pi(y|x) / pi_ref(y|x)], for the chosen and
    the rejected answers of each pair (each (B,)). The reference's log-probabilities are
    constants: no gradient flows into them."""
    _check(beta, policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return beta * (policy_chosen - reference_chosen.detach()), beta * (policy_rejected - reference_rejected.detach())


def dpo_loss(policy_chosen: torch.Tensor,
             policy_rejected: torch.Tensor,
             reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """DPO's loss (Rafailov et al. 2023, eq. 7), averaged over the pairs:
    -log sigma of the margin between the implicit rewards of the chosen and
    the rejected answer. Arguments are sequence log-probabilities
    (``sequence_log_probs``) of shape (B,); the reference's are treated as
    constants."""
    chosen, rejected = implicit_rewards(
        policy_chosen, policy_rejected,
        reference_chosen, reference_rejected, beta)
    return -F.logsigmoid(chosen - rejected).mean()


def best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """For each column of ``scores`` (samples, items), the row of the highest score among the
    first ``n`` samples (the first on a tie). NaN marks a sample that could not be scored: never
    picked unless all ``n`` are NaN. Returns (items,) row indices."""
    if scores.dim() != 2:
        raise ValueError(f"scores is (samples, items), got shape {tuple(scores.shape)}")
    if not isinstance(n, int) or not 1 <= n <= len(scores):
        raise ValueError(f"n is a number of samples from 1 to {len(scores)}, got {n!r}")
    return scores[:n].nan_to_num(nan=-math.inf).argmax(0)


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1) / n nats, the KL divergence of best-of-n from its sampler as Stiennon et
    al. (2020) and Gao et al. (2023) compute it; always an upper bound, close when no single
    answer is likely (Beirami et al. 2024): 0 at n = 1."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n is a number of samples >= 1, got {n!r}")
    return math.log(n) - (n - 1) / n


__all__ = ["sequence_log_probs", "implicit_rewards", "dpo_loss", "best_of_n", "best_of_n_kl"]
