import json

import pytest

from jointtask.train.config import load_config
from jointtask.train.loop import train_run
from jointtask.train.run_dir import read_result
from jointtask.fileio import read_jsonl

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here trains, or starts processes

MAX10 = ROOT / "configs" / "max-mod10.toml"


@pytest.mark.slow
def test_max_mod10_learns(tmp_path):
    r = run_cli("train", MAX10, "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    result = read_result(tmp_path / "run")  # a valid RunResult
    assert result is not None and result.run_id == load_config(MAX10).run_id()
    assert result.accuracy["MAX"] >= 0.9
    assert result.stop_reason == "ceiling" and result.steps < 600  # early stopping at the ceiling
    assert json.loads(r.stdout)["accuracy"] == result.accuracy
    assert result.params > result.params_non_embedding > 0 and result.ops == ["MAX"]
    assert (tmp_path / "run" / "config.toml").exists() and (tmp_path / "run" / "checkpoint.pt").exists()


def test_run_id_hashes_what_shapes_the_result():
    def rid(*sets):
        return load_config(MAX10, list(sets)).run_id()

    base = rid("train.early_stop=true")
    assert rid("train.early_stop=true", "train.threads=2", "train.checkpoint_every=7") == base  # speed, not result
    assert rid("train.early_stop=true", "train.eval_every=7") != base  # evaluations decide when it stops
    assert rid("train.early_stop=false", "train.eval_every=7") == rid("train.early_stop=false")
    assert rid("train.early_stop=false", "train.patience=3", "train.eval_every=7") != rid(
        "train.early_stop=false", "train.patience=3"
    )
    assert rid("train.early_stop=true", "train.lr=0.002") != base


def test_resume_continues_exactly(tmp_path):
    overrides = [
        "task.ops=['ADD','MAX']",
        "task.modulus=7",
        "train.steps=40",
        "train.eval_every=10",
        "train.checkpoint_every=10",
        "train.early_stop=false",
        "model.width=16",
        "data.per_n=40",
        "data.eval_count=30",
        "data.eval_train_count=10",
    ]
    cfg = load_config(MAX10, overrides)
    full = train_run(cfg, tmp_path / "full", quiet=True)
    assert train_run(cfg, tmp_path / "part", stop_after=25, quiet=True) is None
    resumed = train_run(cfg, tmp_path / "part", resume=True, quiet=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    assert strip(read_jsonl(tmp_path / "full" / "metrics.jsonl")) == strip(
        read_jsonl(tmp_path / "part" / "metrics.jsonl")
    )
    for key in ("accuracy", "accuracy_train", "final_loss", "tokens_seen", "steps"):
        assert getattr(full, key) == getattr(resumed, key)


def _assert_clean_error(r, needle):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "task.ops=['FOO']"], "unknown operation 'FOO'"),
        (["--set", "task.modulus=1"], "modulus must be >= 2"),
        (["--set", "task.ops=['PMUL']", "--set", "task.degree=1"], "degree"),
        (["--set", "data.per_n=-3"], "per_n"),
        (["--set", "model.width=30", "--set", "model.heads=4"], "divisible"),
        (["--set", "train.stpes=10"], "train.stpes: unknown key"),
        (["--set", "nonsense"], "key=value"),
        (["--set", "train.packing='windows'"], "needs train.loss_on = 'all'"),
        (["--set", "train.lr=inf"], "lr must be a finite number"),
        (["--set", "train.lr=nan"], "lr must be a finite number"),
        (["--set", "train.weight_decay=nan"], "weight_decay must be a finite number"),
        (["--set", "train.beta1=5"], "beta1 must be in [0, 1)"),
        (["--set", "train.beta2=1.0"], "beta2 must be in [0, 1)"),
        (["--set", "train.device='gpu'"], "train.device must be"),
        (["--set", "model.width=true"], "width must be a number, got true"),
        (["--set", "data.eval_count=0"], "eval_count must be >= 1"),
        (["--set", "seed=-2"], "seed must be >= 0"),
    ],
)
def test_bad_config_values_fail_cleanly(tmp_path, args, needle):
    out = tmp_path / "run"
    r = run_cli("train", MAX10, "--out", out, *args)
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
    _assert_clean_error(
        run_cli("data", "--ops", "ADD", "--modulus", "5", "--count", "-1", "--out", tmp_path / "d.jsonl"), "count"
    )
    assert not (tmp_path / "d.jsonl").exists()


def test_a_corrupt_checkpoint_is_set_aside_and_the_run_trained_again(tmp_path):
    """A checkpoint is only a cache of the run's state: a damaged one is moved aside with a warning
    and the run trains from the start, to the result an uninterrupted run gives."""
    run, clean = tmp_path / "run", tmp_path / "clean"
    short = ["--quiet", "--set", "train.checkpoint_every=5", "--set", "train.steps=30", "--set", "train.eval_every=10"]
    r = run_cli("train", MAX10, "--out", run, "--stop-after", "5", *short)
    assert r.returncode == 0, r.stderr
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    r = run_cli("train", MAX10, "--out", run, "--resume", *short)
    assert r.returncode == 0 and "corrupt checkpoint" in r.stderr and "from the start" in r.stderr
    assert list(run.glob("checkpoint.pt.corrupt-*"))
    assert run_cli("train", MAX10, "--out", clean, *short).returncode == 0
    a, b = (json.loads((d / "result.json").read_text()) for d in (run, clean))
    assert a["accuracy"] == b["accuracy"] and a["final_loss"] == b["final_loss"] and a["steps"] == b["steps"] == 30


def test_windowed_baseline_recipe_runs(tmp_path):
    """The naive recipe (packed 128-token windows, loss on all tokens) as a config of the trainer."""
    cfg = load_config(
        MAX10,
        [
            "train.packing='windows'",
            "train.loss_on='all'",
            "train.batch_size=8",
            "train.steps=20",
            "train.eval_every=10",
            "train.early_stop=false",
        ],
    )
    result = train_run(cfg, tmp_path / "w", quiet=True)
    assert result.steps == 20 and result.tokens_seen == 20 * 8 * 128
    losses = [r["loss"] for r in read_jsonl(tmp_path / "w" / "metrics.jsonl")]
    assert len(losses) == 2 and losses[1] < losses[0] < 4.0  # it learns the token statistics from the windows
