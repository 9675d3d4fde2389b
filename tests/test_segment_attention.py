"""The CPU kernel for attention inside packed examples against a float64 reference written out
segment by segment, and against the SDPA-with-masks path it replaces."""

import numpy as np
import pytest
import torch

from jointtask import cpu_kernels, segment_attention
from jointtask.model import LoopedTransformer, ModelConfig


def reference(qkv: torch.Tensor, start: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain softmax attention, one token at a time, in float64."""
    N, C = qkv.shape[0], qkv.shape[1] // 3
    D = C // heads
    q, k, v = qkv.double().split(C, dim=1)
    out = []
    for i in range(N):
        s = int(start[i])
        rows = []
        for h in range(heads):
            cols = slice(h * D, (h + 1) * D)
            w = torch.softmax(k[s: i + 1, cols] @ q[i, cols] / D**0.5, dim=0)
            rows.append(w @ v[s: i + 1, cols])
        out.append(torch.cat(rows))
    return torch.stack(out)


def random_segments(lengths, pad_every=3):
    """start[] for segments of the given lengths, with a padding token (its own segment) now and then."""
    start, n = [], 0
    for j, L in enumerate(lengths):
        start += [n] * L
        n += L
        if j % pad_every == 0:
            start.append(n)
            n += 1
    return torch.tensor(start, dtype=torch.int64)


def test_kernel_builds_here():
    assert cpu_kernels.kernels() is not None, "the C++ kernel did not build: see the message above"


@pytest.mark.parametrize("width,heads", [(16, 1), (24, 1), (40, 2), (6, 3), (128, 4)])
def test_kernel_matches_a_float64_reference_values_and_gradients(width, heads):
    rng = np.random.default_rng(width)
    # lengths below, at and above one 16-key chunk, and one wider than a 64-token row
    lengths = [1, 2, 15, 16, 17, 33, 70] + list(rng.integers(1, 30, size=8))
    start = random_segments(lengths)
    torch.manual_seed(width)
    qkv = torch.randn(len(start), 3 * width, requires_grad=True)
    grad = torch.randn(len(start), width)
    out = segment_attention.segment_attention(qkv, start, heads)
    (out * grad).sum().backward()
    qkv64 = qkv.detach().double().requires_grad_()
    ref = reference(qkv64, start, heads)
    (ref * grad.double()).sum().backward()
    assert torch.allclose(out.double(), ref, atol=2e-5, rtol=1e-4)
    assert torch.allclose(qkv.grad.double(), qkv64.grad, atol=5e-5, rtol=1e-4)


def test_kernel_rejects_starts_that_are_not_contiguous_segments():
    qkv = torch.randn(4, 12)
    with pytest.raises(RuntimeError, match="does not open a segment"):
        segment_attention.segment_attention(qkv, torch.tensor([0, 0, 0, 1]), 1)


def test_packed_training_step_is_the_same_with_the_kernels_and_with_sdpa_masks(monkeypatch):
    from jointtask.tasks import DataConfig, TaskConfig
    from jointtask.tasks.dataset import build_task_data, context_length
    from jointtask.train.loop import batch_indices, loss_on_batch, make_batch

    task = TaskConfig(ops=["ADD", "MED"], modulus=7, max_depth=3, p_nest=0.5)
    d = build_task_data(task, DataConfig(per_n=30, eval_count=0, eval_train_count=0), 0)
    b = make_batch(d.train, batch_indices(0, 0, len(d.train), 64), "answer", "cpu", pack=32)
    assert b.packing is not None and len(b.packing.widths) > 1
    assert (b.packing.segment < 0).any()  # padding, which the kernel path leaves out
    losses, grads = [], []
    for use_kernel in (True, False):
        monkeypatch.setattr(cpu_kernels, "usable", lambda x, k=use_kernel: k)
        torch.manual_seed(0)
        m = LoopedTransformer(ModelConfig(width=24, heads=2), len(d.vocab), context_length(task))
        loss = loss_on_batch(m, b)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert abs(losses[0] - losses[1]) < 1e-5
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_the_plain_pytorch_path_can_be_forced_from_the_environment():
    import os
    import subprocess
    import sys

    code = ("import torch; from jointtask import cpu_kernels as k; "
            "print(k.kernels() is None, k.usable(torch.zeros(1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "JOINTTASK_KERNELS": "off"})
    assert out.stdout.split() == ["True", "False"]
