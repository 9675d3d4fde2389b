"""Cohorts: K runs of one shape trained as one computation must train each run as it trains alone."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jointtask.errors import UserError
from jointtask.fileio import read_jsonl
from jointtask.model import LoopedTransformer, ModelConfig
from jointtask.model import stacked as stacked_weights
from jointtask.sweep.executors import prepare_data
from jointtask.train.cohort import Cohort, fit_cohort_size, stacked_forward, train_cohort
from jointtask.train.config import load_config
from jointtask.train.loop import train_run

from .conftest import ROOT

pytestmark = pytest.mark.slow  # every test here trains, or starts processes

MAX10 = ROOT / "configs" / "max-mod10.toml"
SMALL = [  # the strict split these tests' expectations were set on; cohorts do not depend on it
    "data.protocol='strict'",
    "task.modulus=7",
    "task.max_depth=2",
    "model.width=16",
    "data.per_n=60",
    "data.eval_count=40",
    "data.eval_train_count=10",
    "train.pack=0",
    "train.eval_every=10",
    "train.checkpoint_every=10",
]


def test_stacked_forward_matches_separate_models():
    torch.manual_seed(0)
    cfg = ModelConfig(width=16, heads=2, blocks=2, recurrence=2, mlp_ratio=2)
    models = [LoopedTransformer(cfg, 20, 12) for _ in range(3)]
    stacked = {n: w.requires_grad_() for n, w in stacked_weights(models).items()}
    idx = torch.randint(0, 20, (3, 4, 10))
    at = torch.stack([torch.randperm(40)[:7] for _ in range(3)])
    targets = torch.randint(0, 20, (3, 7))
    logits = stacked_forward(models[0], stacked, idx, at)
    F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").backward()
    for k, m in enumerate(models):
        alone = m(idx[k], at=at[k])
        torch.testing.assert_close(logits[k], alone, rtol=1e-5, atol=1e-5)
        F.cross_entropy(alone, targets[k], reduction="sum").backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(stacked[n].grad[k], p.grad, rtol=1e-4, atol=1e-6)


def test_stacked_models_run_with_hooks_each_as_alone():
    """A cohort's models are hooked like any other: every hook point sees the K models'
    activations stacked, each the activation its model gives alone."""
    from torch.func import functional_call

    torch.manual_seed(1)
    cfg = ModelConfig(width=8, heads=2, recurrence=3)
    models = [LoopedTransformer(cfg, 15, 9) for _ in range(3)]
    idx = torch.randint(0, 15, (3, 2, 9))
    names = list(models[0].hook_points())
    cache = {}
    with torch.no_grad(), models[0].hooks([(n, lambda x, hook: cache.setdefault(hook.name, x)) for n in names]):
        logits = functional_call(models[0], stacked_weights(models), (idx,))
    assert set(cache) == set(names) and "passes.2.attn.hook_pattern" in names
    for k, m in enumerate(models):
        alone_logits, alone = m.run_with_cache(idx[k])
        torch.testing.assert_close(logits[k], alone_logits, rtol=1e-5, atol=1e-6)
        for n in names:
            torch.testing.assert_close(cache[n][k].reshape(alone[n].shape), alone[n], rtol=1e-5, atol=1e-6)


def test_stacked_linear_gradients_hold_with_tokens_cut_into_pieces(monkeypatch):
    """The weight gradient reduced in pieces (as on CUDA) is the gradient: checked numerically."""
    import jointtask.model as model

    for pieces in (1, 4):
        monkeypatch.setattr(model, "token_pieces", lambda n, c=pieces: c)
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))
        x, w, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 8, 3), (2, 5, 3), (2, 5)))
        assert torch.autograd.gradcheck(model._StackedLinear.apply, (x, w, b))
        assert torch.autograd.gradcheck(model._StackedLinear.apply, (x, w, None))
        monkeypatch.undo()


def test_a_cohort_evaluates_its_runs_at_once_as_each_evaluates_alone(tmp_path):
    from jointtask.train.loop import Run, evaluate

    variants = (["task.ops=['ADD','MAX']", "seed=0"], ["task.ops=['MAX','MIN']", "seed=1", "data.eval_count=25"])
    runs = [Run(load_config(MAX10, SMALL + v), tmp_path / str(i)) for i, v in enumerate(variants)]
    cohort = Cohort(runs)
    for _ in range(40):
        cohort.step()
        for r in runs:
            r.state["step"] += 1
    for k in range(2):
        cohort.sync(k)
    alone = [evaluate(r.model, r.data.validation_sets, r.data, "cpu") for r in runs]
    assert cohort.evaluate([1, 0]) == alone[::-1] and cohort.evaluate([]) == []
    assert set(alone[0]) == {"ADD", "MAX", "mixture"} and 0 < alone[1]["MAX"] < 1  # partly learned: a real check


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


@pytest.mark.parametrize("device", ["cpu", "cpu-fixed-shapes", CUDA])
def test_a_cohort_trains_each_run_as_it_trains_alone(tmp_path, device, monkeypatch, capsys):
    """Different mixtures, seeds, learning rates, budgets; one run stops early (ceiling) and leaves.
    On CUDA the steps are replayed as a graph with batches of fixed shape; the fixed shapes are
    also checked on the CPU."""
    if device == "cpu-fixed-shapes":
        monkeypatch.setattr(Cohort, "fixed_shapes_on", ("cpu",))
        device = "cpu"
    variants = [
        ["task.ops=['ADD','MAX']", "seed=0", "train.steps=30", "train.early_stop=false"],
        [
            "task.ops=['ADD']",
            "seed=1",
            "train.steps=30",
            "train.lr=0.001",
            "train.grad_clip=0.05",
            "train.early_stop=false",
        ],
        ["task.ops=['MAX','MIN']", "seed=2", "train.steps=30", "train.ceiling=0.05"],
    ]
    cfgs = [load_config(MAX10, SMALL + v + [f"train.device={device}"]) for v in variants]
    solo = [train_run(c, tmp_path / f"solo{i}", quiet=True) for i, c in enumerate(cfgs)]
    cohort = train_cohort(cfgs, [tmp_path / f"co{i}" for i in range(3)])
    assert "1 cohort(s) of 3 runs at width(s) 16: 30 steps in" in capsys.readouterr().err
    assert solo[2] is not None and solo[2].stop_reason == "ceiling" and solo[2].steps == 10  # it left the cohort
    for i, (a, b) in enumerate(zip(solo, cohort)):
        assert a is not None and b.run_id == a.run_id == cfgs[i].run_id()
        same = {k: v for k, v in a.model_dump().items() if k not in ("train_seconds", "final_loss")}
        assert {k: v for k, v in b.model_dump().items() if k in same} == same
        rows_a, rows_b = (
            read_jsonl(tmp_path / f"solo{i}" / "metrics.jsonl"),
            read_jsonl(tmp_path / f"co{i}" / "metrics.jsonl"),
        )
        assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
        np.testing.assert_allclose([r["loss"] for r in rows_b], [r["loss"] for r in rows_a], rtol=1e-5)
        wa = torch.load(tmp_path / f"solo{i}" / "checkpoint.pt", map_location="cpu")
        wb = torch.load(tmp_path / f"co{i}" / "checkpoint.pt", map_location="cpu")
        assert wa["state"]["step"] == wb["state"]["step"]
        for n in wa["model"]:
            torch.testing.assert_close(wb["model"][n], wa["model"][n], rtol=1e-4, atol=2e-5)


def test_a_cohort_of_window_runs_trains_each_as_alone(tmp_path):
    """The naive baseline's layout (windows of the concatenated samples, loss everywhere)."""
    windows = ["train.packing='windows'", "train.loss_on='all'", "train.window=24", "train.steps=20"]
    cfgs = [load_config(MAX10, SMALL + windows + [f"seed={s}"]) for s in (0, 1)]
    solo = [train_run(c, tmp_path / f"solo{i}", quiet=True) for i, c in enumerate(cfgs)]
    cohort = train_cohort(cfgs, [tmp_path / f"co{i}" for i in range(2)])
    for i, (a, b) in enumerate(zip(solo, cohort)):
        assert a is not None and b.run_id == a.run_id and b.tokens_seen == a.tokens_seen == 20 * 24 * 64
        np.testing.assert_allclose(
            [r["loss"] for r in read_jsonl(tmp_path / f"co{i}" / "metrics.jsonl")],
            [r["loss"] for r in read_jsonl(tmp_path / f"solo{i}" / "metrics.jsonl")],
            rtol=1e-5,
        )
    with pytest.raises(UserError, match="one shape"):  # windows and whole examples never share a cohort
        train_cohort([cfgs[0], load_config(MAX10, SMALL)], [tmp_path / "c", tmp_path / "d"], groups=[[0, 1]])


def test_cohort_and_solo_resume_each_others_checkpoints(tmp_path):
    a, b = (load_config(MAX10, SMALL + ["train.steps=20", "train.early_stop=false", f"seed={s}"]) for s in (0, 1))
    full = train_run(a, tmp_path / "full", quiet=True)
    assert train_run(a, tmp_path / "a", stop_after=10, quiet=True) is None  # a killed solo run
    ra, rb = train_cohort([a, b], [tmp_path / "a", tmp_path / "b"])  # the cohort resumes it at step 10
    assert full is not None and ra.accuracy == full.accuracy and ra.steps == 20
    np.testing.assert_allclose(
        [r["loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")],
        [r["loss"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")],
        rtol=1e-5,
    )
    assert train_run(b, tmp_path / "b", resume=True, quiet=True) == rb  # finished: read back as it is


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_runs_of_two_shapes_train_as_two_cohorts_taking_turns_each_as_alone(tmp_path, capsys, device):
    """On CUDA each cohort steps on its own stream."""
    cfgs = [
        load_config(
            MAX10,
            SMALL
            + ["train.steps=20", "train.early_stop=false", f"seed={s}", f"model.width={w}", f"train.device={device}"],
        )
        for s, w in ((0, 16), (1, 32), (2, 16))
    ]
    together = train_cohort(cfgs, [tmp_path / f"co{i}" for i in range(3)])
    assert "2 cohort(s) of 2/1 runs at width(s) 16/32: 20 steps in" in capsys.readouterr().err
    for i, (c, r) in enumerate(zip(cfgs, together)):
        alone = train_run(c, tmp_path / f"solo{i}", quiet=True)
        assert alone is not None and r.run_id == alone.run_id and r.accuracy == alone.accuracy
        np.testing.assert_allclose(
            [m["loss"] for m in read_jsonl(tmp_path / f"co{i}" / "metrics.jsonl")],
            [m["loss"] for m in read_jsonl(tmp_path / f"solo{i}" / "metrics.jsonl")],
            rtol=1e-5,
        )
    with pytest.raises(UserError, match="one shape"):
        train_cohort(cfgs[:2], [tmp_path / "c", tmp_path / "d"], groups=[[0, 1]])


def test_a_local_sweep_builds_its_runs_data_ahead_in_parallel_only_on_an_accelerator(tmp_path, monkeypatch):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to build in parallel")
    monkeypatch.setenv("JOINTTASK_CACHE", str(tmp_path))
    cached = lambda: len(list((tmp_path / "data").glob("*.npz")))
    prepare_data([load_config(MAX10, SMALL + [f"seed={s}"]) for s in (0, 1)])
    assert cached() == 0  # on a CPU the sweep's workers already use every core
    prepare_data([load_config(MAX10, SMALL + [f"seed={s}", "train.device=cuda"]) for s in (0, 1)])
    assert cached() == 6  # per run: its training set, MAX's validation and test sets


def test_cohort_size_fits_the_memory_and_says_so():
    cfg = load_config(MAX10, ["model.width=64"])
    k, why = fit_cohort_size(cfg, 64, free_bytes=64 * 2**20)
    assert 1 <= k < 64 and f"cohort size {k} (asked 64)" in why and "MiB a run" in why
    assert fit_cohort_size(cfg, 4, free_bytes=2**40)[0] == 4


def test_cohort_benchmark_reports_each_size_against_runs_alone():
    from jointtask.bench import run_cohort_bench

    res = run_cohort_bench("cpu", widths=(8,), sizes=(2,), seconds=0.3)
    row = res["widths"]["8"]
    assert row["solo"] > 0 and row["2"] > 0 and set(row["speedup"]) == {"2"}
    assert res["machine"]["device"] == "cpu" and "C2 grid" in res["task"]
