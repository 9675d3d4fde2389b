import os
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jointtask.model import LoopedTransformer, ModelConfig, count_params


@pytest.mark.parametrize(
    "width,heads,rec,blocks,mlp", [(8, 1, 4, 1, 4), (32, 2, 4, 1, 4), (48, 4, 2, 3, 2), (16, 1, 1, 4, 4)]
)
def test_parameter_formula_matches_numel(width, heads, rec, blocks, mlp):
    cfg = ModelConfig(width=width, heads=heads, recurrence=rec, blocks=blocks, mlp_ratio=mlp)
    m = LoopedTransformer(cfg, vocab_size=37, max_len=29)
    assert count_params(cfg, 37, 29) == m.number_of_parameters()
    assert m.number_of_parameters()["params"] == sum(p.numel() for p in m.parameters())


def test_recurrence_shares_weights():
    a = LoopedTransformer(ModelConfig(width=16, recurrence=1), 20, 10)
    b = LoopedTransformer(ModelConfig(width=16, recurrence=6), 20, 10)
    assert a.number_of_parameters() == b.number_of_parameters()
    assert len(b.passes) == 6 and len(b.blocks) == 1


def test_hook_points_are_named_per_pass_and_can_ablate():
    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(width=16, recurrence=3), 20, 12).eval()
    names = set(m.hook_points())
    assert {
        "hook_embed",
        "hook_pos_embed",
        "passes.0.hook_resid_pre",
        "passes.2.attn.hook_pattern",
        "passes.2.hook_attn_out",
        "passes.0.hook_mlp_out",
        "passes.1.hook_resid_post",
    } <= names
    x = torch.randint(0, 20, (2, 12))
    seen = {}
    base = m.run_with_hooks(x, [("passes.1.hook_attn_out", lambda a, hook: seen.__setitem__(hook.name, a))])
    assert seen["passes.1.hook_attn_out"].shape == (2, 12, 16)
    ablated = m.run_with_hooks(x, [("passes.1.hook_attn_out", lambda a, hook: torch.zeros_like(a))])
    assert not torch.allclose(base, ablated)
    assert torch.allclose(m(x), base)  # hooks are removed on exit
    # the residual stream entering pass p+1 is the one leaving pass p
    store = {}
    keep = lambda a, hook: store.__setitem__(hook.name, a)
    m.run_with_hooks(x, [("passes.0.hook_resid_post", keep), ("passes.1.hook_resid_pre", keep)])
    assert torch.equal(store["passes.0.hook_resid_post"], store["passes.1.hook_resid_pre"])


def test_attention_pattern_hook_sees_causal_probabilities_and_changes_nothing():
    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(width=16, heads=2), 20, 12).eval()
    x = torch.randint(0, 20, (3, 12))
    pats = {}
    out = m.run_with_hooks(
        x, [(f"passes.{p}.attn.hook_pattern", lambda a, hook: pats.__setitem__(hook.name, a)) for p in range(4)]
    )
    assert len(pats) == 4
    for a in pats.values():
        assert a.shape == (3, 2, 12, 12)
        assert torch.allclose(a.sum(-1), torch.ones(3, 2, 12), atol=1e-5)
        assert torch.all(a.triu(1) == 0)  # nothing attends ahead
    assert torch.allclose(out, m(x), atol=1e-5)  # written-out attention = SDPA
    # patching the pattern (every token attends to itself only; at initialisation it is near uniform)
    to_self = lambda a, hook: torch.eye(12).expand_as(a)
    assert not torch.allclose(m.run_with_hooks(x, [("passes.0.attn.hook_pattern", to_self)]), out, atol=1e-4)


def test_causal_so_right_padding_is_harmless():
    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(width=16), 20, 12).eval()
    x = torch.randint(0, 20, (1, 12))
    y = x.clone()
    y[0, 8:] = 0
    assert torch.allclose(m(x)[0, :8], m(y)[0, :8], atol=1e-6)


def test_width_must_divide_heads():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(width=30, heads=4)


def test_packed_rows_compute_the_same_loss_as_padded_examples():
    from jointtask.tasks import DataConfig, TaskConfig
    from jointtask.tasks.dataset import build_task_data, context_length
    from jointtask.train.loop import batch_indices, loss_on_batch, make_batch

    task = TaskConfig(ops=["ADD", "MAX"], modulus=7, max_depth=3, p_nest=0.5)
    d = build_task_data(task, DataConfig(per_n=30, eval_count=1, eval_train_count=0), 0)
    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(width=16), len(d.vocab), context_length(task))
    idx = batch_indices(0, 0, len(d.train), 64)
    padded = make_batch(d.train, idx, "answer", "cpu", pack=0)
    packed = make_batch(d.train, idx, "answer", "cpu", pack=48)
    assert packed.packing is not None and packed.inputs.numel() < padded.inputs.numel()  # really packed
    assert len(packed.packing.row_lengths) > 1  # rows of several lengths
    assert torch.equal(padded.targets.sort().values, packed.targets.sort().values)  # same tokens, rows reordered
    assert abs(loss_on_batch(m, padded).item() - loss_on_batch(m, packed).item()) < 1e-5
    # and the same gradients
    grads = []
    for b in (padded, packed):
        m.zero_grad()
        loss_on_batch(m, b).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("blocks,rec", [(1, 4), (2, 2)])
def test_outputs_at_some_tokens_equal_the_full_outputs_there(blocks, rec):
    """`at` computes the last pass after attention only at the asked tokens: same values and
    the same weight gradients as computing every token and picking those."""
    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(width=16, blocks=blocks, recurrence=rec), 20, 12)
    x = torch.randint(0, 20, (3, 12))
    at = torch.tensor([0, 5, 11, 17, 30, 35])
    outs, grads = [], []
    for sub in (lambda: m.residual(x, at=at), lambda: m.residual(x).reshape(-1, 16)[at]):
        m.zero_grad()
        h = sub()
        (h * torch.arange(16.0)).sum().backward()
        outs.append(h.detach())
        grads.append(torch.cat([p.grad.flatten() for n, p in m.named_parameters() if n != "head.weight"]))
    assert outs[0].shape == (6, 16)
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 150), min_size=1, max_size=80), st.sampled_from([8, 16, 32, 64]))
def test_packed_rows_hold_every_example_once_without_overlap(lengths, pack):
    from jointtask.train.loop import pack_rows

    lengths = np.array(lengths)
    row, offset, row_counts, row_lengths = pack_rows(lengths, pack)
    assert all(w >= pack and w % pack == 0 for w in row_lengths) and row_lengths == sorted(set(row_lengths))
    row_len = np.repeat(row_lengths, row_counts)
    assert len(row_len) == row.max() + 1  # no empty rows
    used = [np.zeros(w, int) for w in row_len]
    for r, o, n in zip(row, offset, lengths):
        assert 0 <= o and o + n <= row_len[r]
        used[r][o : o + n] += 1
    assert max(u.max() for u in used) == 1  # no token slot shared
    # an example opens a row only as long as needed: the shortest length holding the longest example
    assert row_lengths[-1] < 2 * max(pack, lengths.max())


def test_benchmark_baseline_has_the_same_architecture_and_parameter_count():
    from jointtask.bench import NaiveLoopedTransformer

    naive = NaiveLoopedTransformer(vocab=23, width=32, context=40)
    ours = LoopedTransformer(ModelConfig(width=32), 23, 40)
    assert sum(p.numel() for p in naive.parameters()) == sum(p.numel() for p in ours.parameters())
    assert naive(torch.randint(0, 23, (2, 40))).shape == (2, 40, 23)


@pytest.mark.slow
def test_benchmark_alternates_both_loops_in_fresh_processes_and_names_the_machine():
    from jointtask.bench import bench_width, cpu_flags, recommendation

    r = bench_width(8, 0.2, rounds=1)  # two spawned processes, a fraction of a second of training each
    for key in ("ours_tok_s", "naive_tok_s", "peak_flops"):
        assert r[key] > 0, key
    assert r["ratio"] == r["ours_tok_s"] / r["naive_tok_s"] and r["ratio_per_round"] == [r["ratio"]]
    assert 0 < r["peak_fraction"] < 1 and 0 < r["naive_peak_fraction"] < 1
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        assert "sse4_2" in cpu_flags()
    assert "slower" in recommendation({"16": {"ratio": 0.8}, "32": {"ratio": 1.4}})
    assert "slower" not in recommendation({"16": {"ratio": 1.1}})


def test_multi_head_attention_matches_a_written_out_reference():
    torch.manual_seed(0)
    att = LoopedTransformer(ModelConfig(width=16, heads=4), 20, 12).blocks[0].attn
    x = torch.randn(2, 10, 16)
    q, k, v = (t.view(2, 10, 4, 4).transpose(1, 2) for t in att.qkv(x).split(16, dim=-1))
    causal = torch.full((10, 10), float("-inf")).triu(1)
    y = torch.softmax(q @ k.transpose(-1, -2) / 2 + causal, dim=-1) @ v
    assert torch.allclose(att.proj(y.transpose(1, 2).reshape(2, 10, 16)), att(x), atol=1e-6)
