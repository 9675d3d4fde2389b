import json
import os
import subprocess
import sys

import pytest

from jointtask.train.config import load_config
from jointtask.train.loop import train_run
from jointtask.fileio import read_jsonl

from .conftest import ROOT, run_cli

MAX5 = ROOT / "configs" / "max-mod5.toml"


@pytest.mark.slow
def test_max_mod5_learns(tmp_path):
    r = run_cli("train", MAX5, "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["accuracy"]["MAX"] >= 0.9
    assert result["stop_reason"] == "ceiling" and result["steps"] < 600  # early stopping at the ceiling
    assert json.loads(r.stdout)["accuracy"] == result["accuracy"]
    for key in ("params", "params_non_embedding", "width", "ops", "steps", "tokens_seen", "train_seconds"):
        assert key in result
    assert (tmp_path / "run" / "config.toml").exists() and (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_continues_exactly(tmp_path):
    overrides = ["task.ops=['ADD','MAX']", "task.modulus=7", "train.steps=40", "train.eval_every=10",
                 "train.checkpoint_every=10", "train.early_stop=false", "model.width=16", "data.per_n=40",
                 "data.eval_count=30", "data.eval_train_count=10"]
    cfg = load_config(MAX5, overrides)
    full = train_run(cfg, tmp_path / "full", quiet=True)
    assert train_run(cfg, tmp_path / "part", stop_after=25, quiet=True) is None
    resumed = train_run(cfg, tmp_path / "part", resume=True, quiet=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    assert strip(read_jsonl(tmp_path / "full" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "part" / "metrics.jsonl"))
    for key in ("accuracy", "accuracy_train", "final_loss", "tokens_seen", "steps"):
        assert full[key] == resumed[key]


def _assert_clean_error(r, needle):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--set", "task.ops=['FOO']"], "unknown operation 'FOO'"),
    (["--set", "task.modulus=1"], "modulus must be >= 2"),
    (["--set", "task.ops=['PMUL']", "--set", "task.degree=1"], "degree"),
    (["--set", "data.per_n=-3"], "per_n"),
    (["--set", "model.width=30", "--set", "model.heads=4"], "divisible"),
    (["--set", "train.stpes=10"], "train.stpes: unknown key"),
    (["--set", "nonsense"], "key=value"),
    (["--set", "train.packing='windows'"], "needs train.loss_on = 'all'"),
])
def test_bad_config_values_fail_cleanly(tmp_path, args, needle):
    out = tmp_path / "run"
    r = run_cli("train", MAX5, "--out", out, *args)
    _assert_clean_error(r, needle)
    assert not out.exists()


def test_bad_files_fail_cleanly(tmp_path):
    _assert_clean_error(run_cli("train", tmp_path / "missing.toml", "--out", tmp_path / "r"), "not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("[task\nops = 3")
    _assert_clean_error(run_cli("train", bad, "--out", tmp_path / "r"), "malformed config")
    typo = tmp_path / "typo.toml"
    typo.write_text("[modle]\nwidth = 8\n")
    _assert_clean_error(run_cli("train", typo, "--out", tmp_path / "r"), "modle: unknown key")
    assert not (tmp_path / "r").exists()
    _assert_clean_error(run_cli("data", "--ops", "ADD", "--modulus", "1", "--out", tmp_path / "d.jsonl"), "modulus")
    _assert_clean_error(run_cli("data", "--ops", "ADD", "--modulus", "5", "--count", "-1", "--out", tmp_path / "d.jsonl"), "count")
    assert not (tmp_path / "d.jsonl").exists()


def test_corrupt_checkpoint_fails_cleanly(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", MAX5, "--out", run, "--stop-after", "5", "--quiet", "--set", "train.checkpoint_every=5")
    assert r.returncode == 0, r.stderr
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    _assert_clean_error(run_cli("train", MAX5, "--out", run, "--resume"), "corrupt checkpoint")
    assert not (run / "result.json").exists()


def test_windowed_baseline_recipe_runs(tmp_path):
    """The naive recipe (packed 128-token windows, loss on all tokens) as a config of the trainer."""
    cfg = load_config(MAX5, ["train.packing='windows'", "train.loss_on='all'", "train.batch_size=8", "train.steps=20",
                             "train.eval_every=10", "train.early_stop=false"])
    result = train_run(cfg, tmp_path / "w", quiet=True)
    assert result["steps"] == 20 and result["tokens_seen"] == 20 * 8 * 128
    assert 0.0 <= result["accuracy"]["MAX"] <= 1.0


FAULTS = """
import json, resource, torch
torch.set_num_threads(1)
from jointtask.train.allocator import keep_freed_memory
applied = keep_freed_memory()
from jointtask.model import LoopedTransformer, ModelConfig
from jointtask.tasks.dataset import build_task_data, context_length
from jointtask.tasks.spec import DataConfig, TaskConfig
from jointtask.train.config import RunConfig
from jointtask.train.loop import batch_indices, make_batch, make_optimizer, optimisation_step
task = TaskConfig(ops=["ADD", "MAX"], modulus=10, max_depth=2)
data = build_task_data(task, DataConfig(per_n=200, eval_count=0, eval_train_count=0), 0)
cfg = RunConfig(task=task, model=ModelConfig(width=32))
m = LoopedTransformer(cfg.model, len(data.vocab), context_length(task))
opt = make_optimizer(m, cfg)
batches = [make_batch(data.train, batch_indices(0, s, len(data.train), 256), "answer", "cpu", cfg.train.pack)
           for s in range(13)]
for b in batches[:3]:  # the heap settles
    optimisation_step(m, opt, b, 1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for b in batches[3:]:
    optimisation_step(m, opt, b, 1.0)
print(json.dumps({"applied": applied, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_kept_memory_removes_page_faults_on_repeated_steps():
    def run(env):
        out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        return json.loads(out.stdout)

    kept = run({"JOINTTASK_MALLOC": ""})
    default = run({"JOINTTASK_MALLOC": "default"})
    assert kept["applied"] and not default["applied"]
    # real training steps (width 32, 256 packed examples), faults per step: with glibc's defaults
    # each step maps and faults in its activations afresh (2,000-3,300 here), kept they are reused
    # (5-130)
    assert kept["faults"] < 400, kept
    assert default["faults"] > 1000 and default["faults"] > 4 * kept["faults"], (default, kept)


def test_adamw_step_is_bitwise_torch_adamw():
    """train/adamw.py replaces opt.step() in training: same parameters and state, bit for bit,
    over many steps with a changing learning rate, two weight-decay groups, gradients from 1e-6 to
    1 and tensor sizes that leave every kind of vector tail."""
    import torch
    from jointtask import cpu_kernels
    from jointtask.train.adamw import adamw_step

    K = cpu_kernels.kernels()
    if K is None or not K.adamw_available():
        pytest.skip("no AVX-512 kernels here: training uses torch's own AdamW step")
    shapes = [(7,), (24,), (5, 13), (64,), (64, 192), (22, 64), (33,), (16,), (48, 31), (1,)]

    def setup():
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
        groups = [{"params": ps[::2], "weight_decay": 0.1}, {"params": ps[1::2], "weight_decay": 0.0}]
        return ps, torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.99), foreach=True)

    (ref, ref_opt), (ours, our_opt) = setup(), setup()
    gen = torch.Generator().manual_seed(1)
    for step in range(60):
        for p, q in zip(ref, ours):
            g = torch.randn(p.shape, generator=gen) * 10.0 ** -int(torch.randint(0, 7, (), generator=gen))
            p.grad, q.grad = g.clone(), g.clone()
        for o in (ref_opt, our_opt):
            for grp in o.param_groups:
                grp["lr"] = 5e-4 * 0.97**step
        ref_opt.step()
        adamw_step(our_opt)
        for p, q in zip(ref, ours):
            assert torch.equal(p, q), (step, tuple(p.shape))
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(ref_opt.state[p][key], our_opt.state[q][key]), (step, key)
    assert our_opt.state_dict()["state"].keys() == ref_opt.state_dict()["state"].keys()
