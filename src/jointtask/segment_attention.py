"""Causal attention inside the examples of a packed batch, as a small C++ kernel for the CPU.

Packed batches hold whole examples back to back (train/loop.py). With
`scaled_dot_product_attention` every token of a 64-token row scores all 64 keys of its row and a
block-diagonal mask throws most of them away (examples average ~16 tokens); here token i scores
only the tokens of its own example, `start[i] .. i`, and q, k, v are read straight from the qkv
projection (no head permutes, no mask). Measured in docs/performance.md.

The kernel is compiled on first use with the compiler PyTorch finds (torch.utils.cpp_extension,
cached under ~/.cache/torch_extensions, about 25 s once per machine). Without a compiler, or
with JOINTTASK_ATTENTION=sdpa, the model falls back to SDPA with masks: same results up to
float rounding, slower.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "segment_attention.cpp"
FLAGS = ["-O3", "-march=native"]


def _cpu_signature() -> str:
    """-march=native builds for this CPU: the cached binary's name says which CPU it is for."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor() + platform.machine()
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


@lru_cache(maxsize=1)
def kernel():
    """The compiled extension, or None when it cannot be built (the caller falls back to SDPA)."""
    if os.environ.get("JOINTTASK_ATTENTION", "").lower() == "sdpa":
        return None
    try:
        import ninja  # torch's builder runs the `ninja` binary: make the pip package's copy findable

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load

        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:10]
        return load(f"jointtask_segattn_{digest}_{_cpu_signature()}", [str(SOURCE)], extra_cflags=FLAGS,
                    verbose=False)
    except Exception as exc:  # no compiler, no headers, build error: the slower path still works
        reason = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
        print(f"jointtask: segment attention kernel unavailable ({reason[0][:200]}); using SDPA with masks",
              file=sys.stderr)
        return None


class SegmentAttention(torch.autograd.Function):
    """out[i] = softmax over j in [start[i], i] of q_i.k_j / sqrt(D), applied to v_j, per head."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, start: torch.Tensor, heads: int) -> torch.Tensor:
        out, lse = kernel().forward(qkv.contiguous(), start, heads)
        ctx.save_for_backward(qkv, out, lse, start)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, out, lse, start = ctx.saved_tensors
        return kernel().backward(grad_out, qkv.contiguous(), out, lse, start, ctx.heads), None, None


def segment_attention(qkv: torch.Tensor, start: torch.Tensor, heads: int) -> torch.Tensor:
    """qkv [N, 3C] float32 on the CPU, start [N] int64 (each segment a contiguous run) -> [N, C]."""
    return SegmentAttention.apply(qkv, start, heads)


def usable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and kernel() is not None
