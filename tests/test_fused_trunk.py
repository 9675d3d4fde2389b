"""The fused training trunk (fused_trunk.py and csrc/layer_ops.cpp) against PyTorch's own ops:
each kernel against its float64 counterpart, and the whole trunk's loss and every parameter's
gradient against the model's plain forward with autograd."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jointtask.cpu_kernels import kernels
from jointtask.model import LoopedTransformer, ModelConfig
from jointtask.tasks import DataConfig, TaskConfig
from jointtask.tasks.dataset import build_task_data, context_length
from jointtask.train.loop import batch_indices, loss_on_batch, make_batch


@pytest.fixture(scope="module")
def K():
    k = kernels()
    assert k is not None, "the C++ kernels did not build: see the message above"
    return k


@pytest.mark.parametrize("C", [5, 16, 24, 32, 64, 128])  # 16-128: rows in registers
def test_residual_layer_norm_and_its_backward_match_float64_autograd(K, C):
    torch.manual_seed(C)
    N = 37
    r, z, bias = torch.randn(N, C), torch.randn(N, C), torch.randn(C)
    gamma, beta, da, dr0 = torch.randn(C), torch.randn(C), torch.randn(N, C), torch.randn(N, C)
    x, a, mean, rstd = K.residual_layer_norm(r, z.clone(), bias, gamma, beta, 1e-5)
    leaves = [t.double().requires_grad_() for t in (r, z, bias, gamma, beta)]
    x64 = leaves[0] + leaves[1] + leaves[2]
    a64 = F.layer_norm(x64, (C,), leaves[3], leaves[4], 1e-5)
    assert torch.allclose(x.double(), x64, atol=1e-6) and torch.allclose(a.double(), a64, atol=1e-5)
    a64.backward(da.double())
    dr, dg, db, dbias = dr0.clone(), torch.zeros(C), torch.zeros(C), torch.ones(C)
    K.layer_norm_backward(da, x, mean, rstd, gamma, dr, True, dg, db, dbias)
    grad_x = leaves[0].grad
    assert torch.allclose(dr.double(), dr0.double() + grad_x, atol=1e-5)
    assert torch.allclose(dg.double(), leaves[3].grad, atol=1e-4) and torch.allclose(db.double(), leaves[4].grad, atol=1e-4)
    assert torch.allclose(dbias.double(), 1 + (dr0.double() + grad_x).sum(0), atol=1e-4)
    K.layer_norm_backward(da, x, mean, rstd, gamma, dr, False, dg, db, None)  # overwrite, not add
    assert torch.allclose(dr.double(), grad_x, atol=1e-5)


@pytest.mark.parametrize("M", [12, 64])
def test_bias_gelu_and_its_backward_match_exact_gelu(K, M):
    torch.manual_seed(M)
    z = torch.cat([torch.randn(40, M) * 3, torch.linspace(-12, 12, 4 * M).view(4, M)])
    bias, grad = torch.randn(M), torch.randn(44, M)
    h = K.bias_gelu(z, bias)
    u = (z.double() + bias.double()).requires_grad_()
    ref = F.gelu(u)  # exact (erf) GELU
    assert torch.allclose(h.double(), ref, atol=2e-6, rtol=1e-5)
    ref.backward(grad.double())
    g, dbias = grad.clone(), torch.zeros(M)
    K.bias_gelu_backward(g, z, bias, dbias)
    assert torch.allclose(g.double(), u.grad, atol=2e-6, rtol=1e-5)
    assert torch.allclose(dbias.double(), u.grad.sum(0), atol=1e-4)


def test_kernels_reject_mismatched_shapes_with_a_clear_message(K):
    with pytest.raises(RuntimeError, match="bias has size 3"):
        K.bias_gelu(torch.randn(4, 8), torch.randn(3))
    with pytest.raises(RuntimeError, match="contiguous float32"):
        K.residual_layer_norm(torch.randn(4, 8).t(), None, None, torch.randn(4), torch.randn(4), 1e-5)


@pytest.fixture(scope="module")
def batch():
    task = TaskConfig(ops=["ADD", "MED"], modulus=7, max_depth=3, p_nest=0.5)
    d = build_task_data(task, DataConfig(per_n=30, eval_count=0, eval_train_count=0), 0)
    b = make_batch(d.train, batch_indices(0, 0, len(d.train), 64), "answer", "cpu", pack=32)
    assert b.packing is not None
    return b, len(d.vocab), context_length(task)


@pytest.mark.parametrize("width,heads,blocks,recurrence", [(16, 1, 1, 4), (24, 2, 1, 4), (12, 3, 2, 2), (5, 1, 1, 3)])
def test_fused_trunk_gives_the_plain_models_loss_and_gradients(batch, width, heads, blocks, recurrence):
    b, vocab, ctx = batch
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        m = LoopedTransformer(ModelConfig(width=width, heads=heads, blocks=blocks, recurrence=recurrence), vocab, ctx)
        with torch.no_grad():  # biases and LayerNorm parameters away from their 0 / 1 init
            for name, p in m.named_parameters():
                if p.dim() == 1:
                    p.add_(0.3 * torch.randn_like(p))
        m._hooks_attached = lambda fused=fused: not fused  # what decides the path in residual()
        loss = loss_on_batch(m, b)
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in m.named_parameters()}))
    (loss_fused, g_fused), (loss_plain, g_plain) = results
    assert abs(loss_fused - loss_plain) < 1e-5
    for name in g_plain:
        scale = g_plain[name].abs().max().item()
        assert (g_fused[name] - g_plain[name]).abs().max().item() <= 1e-4 * scale + 1e-7, name


def test_a_hook_turns_the_fused_path_off_so_the_hook_is_called(batch):
    b, vocab, ctx = batch
    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(width=16), vocab, ctx)
    seen = []
    plain = loss_on_batch(m, b).item()
    with m.hooks([("passes.2.hook_mlp_out", lambda x: seen.append(x.shape) or None)]):
        hooked = loss_on_batch(m, b).item()
    assert seen == [(len(b.inputs), 16)]
    assert abs(plain - hooked) < 1e-5
    with m.hooks([("passes.0.hook_attn_out", lambda x: torch.zeros_like(x))]):  # patching works too
        assert abs(loss_on_batch(m, b).item() - plain) > 1e-4
    with m.hooks([("hook_pos_embed", lambda x: torch.zeros_like(x))]):  # the embeddings' hook points too
        assert abs(loss_on_batch(m, b).item() - plain) > 1e-4
    assert np.isfinite(plain)
