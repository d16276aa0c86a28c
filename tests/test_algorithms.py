"""mmlib.algorithms: each hand-written layer equals PyTorch's own."""

import pytest
import torch

from mmlib.algorithms import conv2d_by_hand, gru_cell_by_hand, multi_head_attention_by_hand, scaled_dot_product_attention


@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (1, 2, 5)])
def test_conv2d_by_hand_equals_nn_conv2d(stride, padding, k):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, k, stride=stride, padding=padding)
    x = torch.randn(2, 3, 17, 15)
    mine = conv2d_by_hand(x, conv.weight, conv.bias, stride=stride, padding=padding)
    assert mine.shape == conv(x).shape
    assert (mine - conv(x)).abs().max() <= 1e-5


def test_conv2d_by_hand_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="same C_in"):
        conv2d_by_hand(torch.randn(1, 3, 8, 8), torch.randn(4, 2, 3, 3))


def test_gru_cell_by_hand_equals_nn_grucell():
    torch.manual_seed(1)
    cell = torch.nn.GRUCell(10, 16)
    x, h = torch.randn(4, 10), torch.randn(4, 16)
    mine = gru_cell_by_hand(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert (mine - cell(x, h)).abs().max() <= 1e-6


def test_attention_weights_and_padding():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 4)
    pad = torch.tensor([[False] * 5, [False, False, True, True, True]])
    out, w = scaled_dot_product_attention(q, k, v, pad)
    assert out.shape == (2, 3, 4) and torch.allclose(w.sum(-1), torch.ones(2, 3))
    assert w[1, :, 2:].abs().max() == 0
    expected = torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, -1) @ v
    assert torch.allclose(out[0], expected[0], atol=1e-6)


def test_multi_head_attention_by_hand_equals_nn_multiheadattention():
    torch.manual_seed(3)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    mine, w_mine = multi_head_attention_by_hand(q, kv, kv, mha, pad)
    ref, w_ref = mha(q, kv, kv, key_padding_mask=pad)
    assert (mine - ref).abs().max() <= 1e-5 and (w_mine - w_ref).abs().max() <= 1e-6
