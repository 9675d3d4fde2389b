"""jointtask's C++ kernels for the CPU (csrc/), built on first use.

They serve the training step on packed batches (fused_trunk.py): attention inside each example
instead of a block-diagonal mask over whole rows, and LayerNorm, GELU, residual adds and bias
gradients folded into single passes over memory. Measured in docs/performance.md.

The extension is compiled with the compiler PyTorch finds (torch.utils.cpp_extension, cached
under ~/.cache/torch_extensions, about 30 s once per machine and CPU). Without a compiler, or
with JOINTTASK_KERNELS=off, the model runs on plain PyTorch ops (attention: SDPA with masks):
the same results up to float rounding, slower.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

import torch

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))
HEADERS = sorted((Path(__file__).parent / "csrc").glob("*.h"))
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512"]


def _cpu_signature() -> str:
    """-march=native builds for this CPU: the cached binary's name says which CPU it is for."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor() + platform.machine()
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


@lru_cache(maxsize=1)
def kernels():
    """The compiled extension, or None when it cannot be built (callers fall back to PyTorch ops)."""
    if os.environ.get("JOINTTASK_KERNELS", "").lower() in ("off", "0", "no", "false"):
        return None
    try:
        import ninja  # torch's builder runs the `ninja` binary: make the pip package's copy findable

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load

        digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES + HEADERS) + " ".join(FLAGS).encode())
        return load(f"jointtask_kernels_{digest.hexdigest()[:10]}_{_cpu_signature()}", [str(p) for p in SOURCES],
                    extra_cflags=FLAGS, verbose=False)
    except Exception as exc:  # no compiler, no headers, build error: the slower path still works
        reason = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
        print(f"jointtask: CPU kernels unavailable ({reason[0][:200]}); using PyTorch ops", file=sys.stderr)
        return None


def usable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and kernels() is not None
