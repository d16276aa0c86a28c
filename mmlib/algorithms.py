"""The core algorithms of the source article (§2.2), written by hand to be read.

Chapter 3 shows each function's source, checks it against PyTorch's own layer, then uses the
PyTorch version. Nothing here is fast; everything here is short.
"""

from __future__ import annotations

import math

import torch


def conv2d_by_hand(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution as 'unfold, then one matrix product' (what
    nn.Conv2d computes).

    x: (B, C_in, H, W); weight: (C_out, C_in, k, k) -> (B, C_out, H', W')
    """
    if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected x (B, C_in, H, W) and weight (C_out, C_in, k, k) "
            f"with the same C_in, got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}")
    batch, _, height, width = x.shape
    c_out, _, k, _ = weight.shape
    patches = torch.nn.functional.unfold(  # (B, C_in * k * k, L)
        x, k, padding=padding, stride=stride)
    # Every output pixel is a dot product of the kernel with one patch.
    out = weight.reshape(c_out, -1) @ patches
    if bias is not None:
        out = out + bias[:, None]
    h_out = (height + 2 * padding - k) // stride + 1
    w_out = (width + 2 * padding - k) // stride + 1
    return out.reshape(batch, c_out, h_out, w_out)


def gru_cell_by_hand(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One GRU step, with nn.GRUCell's parameters and gate order
    (reset, update, new).

    r = sigma(W_ir x + b_ir + W_hr h + b_hr)   reset: how much past to use
    z = sigma(W_iz x + b_iz + W_hz h + b_hz)   update: how much to keep
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   the candidate state
    h' = (1 - z) * n + z * h
    """
    gi = x @ weight_ih.T + bias_ih  # (B, 3H): the input's part of each gate
    gh = h @ weight_hh.T + bias_hh  # (B, 3H): the previous state's part
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d)) V. q: (..., n_q, d), k and v: (..., n_k, d).

    key_padding_mask: (B, n_k), True where a key is padding (it then gets zero weight).
    Returns the output (..., n_q, d_v) and the weights (..., n_q, n_k).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, :] if scores.dim() == 3 else key_padding_mask[:, None, None, :]
        scores = scores.masked_fill(mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def multi_head_attention_by_hand(query, key, value, mha,
                                 key_padding_mask=None):
    """Multi-head attention with the weights of a ``batch_first``
    nn.MultiheadAttention ``mha``.

    Project to queries, keys and values; split the width into heads;
    attend in each head; join the heads; project out. Returns the output
    (B, n_q, d) and the attention weights averaged over heads.
    """
    d, heads = mha.embed_dim, mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)

    def split(t):  # (B, n, d) -> (B, heads, n, d / heads)
        B, n = t.shape[:2]
        return t.reshape(B, n, heads, d // heads).transpose(1, 2)

    q = split(query @ w_q.T + b_q)
    k = split(key @ w_k.T + b_k)
    v = split(value @ w_v.T + b_v)
    out, weights = scaled_dot_product_attention(q, k, v, key_padding_mask)
    B, n_q = query.shape[:2]
    out = out.transpose(1, 2).reshape(B, n_q, d)  # join the heads
    return mha.out_proj(out), weights.mean(dim=1)


__all__ = ["conv2d_by_hand", "gru_cell_by_hand", "scaled_dot_product_attention", "multi_head_attention_by_hand"]
