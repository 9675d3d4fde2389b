"""Causal attention inside the examples of a packed batch, on the CPU kernel of cpu_kernels.py.

Packed batches hold whole examples back to back (train/loop.py). With
`scaled_dot_product_attention` every token of a 64-token row scores all 64 keys of its row and a
block-diagonal mask throws most of them away (examples average ~16 tokens); here token i scores
only the tokens of its own example, `start[i] .. i`, and q, k, v are read straight from the qkv
projection (no head permutes, no mask).
"""

from __future__ import annotations

import torch

from .cpu_kernels import kernels


class SegmentAttention(torch.autograd.Function):
    """out[i] = softmax over j in [start[i], i] of q_i.k_j / sqrt(D), applied to v_j, per head."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, start: torch.Tensor, heads: int) -> torch.Tensor:
        out, lse = kernels().attention_forward(qkv.contiguous(), None, start, heads)
        ctx.save_for_backward(qkv, out, lse, start)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, out, lse, start = ctx.saved_tensors
        return kernels().attention_backward(grad_out, qkv.contiguous(), None, out, lse, start, ctx.heads, None), None, None


def segment_attention(qkv: torch.Tensor, start: torch.Tensor, heads: int) -> torch.Tensor:
    """qkv [N, 3C] float32 on the CPU, start [N] int64 (each segment a contiguous run) -> [N, C]."""
    return SegmentAttention.apply(qkv, start, heads)
