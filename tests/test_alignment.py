"""mmlib.alignment: DPO's loss against its formula, hand-computed cases and its gradient; the
sequence log-probability it is fed; clear errors."""

import math

import pytest
import torch

from mmlib.alignment import dpo_loss, implicit_rewards, sequence_log_probs


def test_dpo_loss_by_hand():
    """beta = 0.5, policy (-1, -2) against reference (-1.5, -1.5): margin 0.5 (0.5 + 0.5) = 0.5,
    loss log(1 + e^-0.5) = 0.474077; at the reference itself the loss is log 2."""
    t = torch.tensor
    assert dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), beta=0.5).item() == pytest.approx(0.474077, abs=1e-6)
    same = t([-3.0, -0.2])
    assert dpo_loss(same, same - 1, same, same - 1, beta=2.0).item() == pytest.approx(math.log(2), abs=1e-7)


def test_dpo_loss_is_the_formula_and_swapping_the_answers_flips_the_margin():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(7) * 3 for _ in range(4))
    beta = 0.3
    margin = beta * ((pc - rc) - (pr - rr))
    expected = -torch.log(torch.sigmoid(margin)).mean()
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta), expected, atol=1e-6)
    assert torch.allclose(dpo_loss(pr, pc, rr, rc, beta), -torch.log(torch.sigmoid(-margin)).mean(), atol=1e-6)
    chosen, rejected = implicit_rewards(pc, pr, rc, rr, beta)
    assert torch.allclose(chosen - rejected, margin)
    # stable where the naive formula is not: a huge margin costs nothing, a hugely wrong one ~ -margin
    big = torch.tensor([1e4])
    zero = torch.zeros(1)
    assert dpo_loss(big, zero, zero, zero, beta=1.0).item() == 0.0
    assert dpo_loss(zero, big, zero, zero, beta=1.0).item() == pytest.approx(1e4)


def test_the_gradient_raises_the_chosen_and_lowers_the_rejected_by_the_papers_weight():
    """d loss / d log pi(y_w) = -beta sigma(-margin) / B (eq. 8 of the paper), and the opposite
    for y_l; the reference gets no gradient, even from tensors that would take one."""
    pc, pr = torch.tensor([-1.0, -4.0], requires_grad=True), torch.tensor([-2.0, -1.0], requires_grad=True)
    rc, rr = torch.tensor([-1.5, -2.0], requires_grad=True), torch.tensor([-1.5, -2.0], requires_grad=True)
    beta = 0.5
    dpo_loss(pc, pr, rc, rr, beta).backward()
    assert rc.grad is None and rr.grad is None, "the reference is a constant"
    weight = torch.sigmoid(-beta * ((pc - rc) - (pr - rr))).detach()
    assert torch.allclose(pc.grad, -beta * weight / 2) and torch.allclose(pr.grad, beta * weight / 2)
    assert weight[1] > weight[0], "the pair the policy ranks wrongly weighs more"


def test_sequence_log_probs_sums_the_answers_tokens_only():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    targets, mask = torch.tensor([[0, 1, 2]]), torch.tensor([[False, True, True]])
    assert sequence_log_probs(logits, targets, mask).item() == pytest.approx(math.log(0.8) + math.log(0.6), abs=1e-6)
    with pytest.raises(ValueError, match=r"logits \(B, T, V\)"):
        sequence_log_probs(logits[0], targets, mask)


@pytest.mark.parametrize("beta", [0, -1.0])
def test_bad_input_gets_a_clear_error(beta):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=beta)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(x, torch.zeros(2), x, x)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="empty"):
        dpo_loss(*(torch.zeros(0),) * 4)
