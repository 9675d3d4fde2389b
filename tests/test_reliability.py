"""No silent wrong results: each failure found by trying the tool as a new user would, with bad
inputs, corrupted files and awkward moments, reproduced here; every one must end in a correct
result, or in one line on stderr with exit 2 and nothing half-written."""

import json
import os
import stat

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jointtask.sweep.results import collect

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here starts processes, trains, or refits every committed table

MAX10 = ROOT / "configs" / "max-mod10.toml"
TINY = """name = "tiny"
[sweep]
mixtures = ["MAX"]
widths = [8]
seeds = {seeds}
[base.task]
modulus = 5
max_depth = 1
[base.data]
per_n = 40
eval_count = 20
eval_train_count = 10
[base.train]
steps = {steps}
batch_size = 16
eval_every = 10
checkpoint_every = 10
early_stop = false
"""


def one_line_error(r, needle):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]


def experiment(tmp_path, seeds="[0, 1]", steps=20, name="exp.toml"):
    f = tmp_path / name
    f.write_text(TINY.format(seeds=seeds, steps=steps))
    return f


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rel")
    out = tmp / "sweep"
    r = run_cli("sweep", experiment(tmp), "--out", out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    return tmp, out


def test_a_changed_experiment_never_mixes_with_the_old_plan(finished, tmp_path):
    tmp, out = finished
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    changed = experiment(tmp_path, steps=30, name="changed.toml")
    r = run_cli("sweep", changed, "--out", copy)
    one_line_error(r, "base.train.steps: 20 -> 30")
    assert len(collect(copy)) == 2  # nothing of the new plan was added
    r = run_cli("sweep", changed, "--out", copy, "--replan", "--workers", "2")
    assert r.returncode == 0, r.stderr
    df = collect(copy)
    assert len(df) == 2 and set(df.steps) == {30}  # only the new plan's runs


def test_duplicates_and_negative_seeds_are_refused(tmp_path):
    one_line_error(
        run_cli("sweep", experiment(tmp_path, seeds="[0, 0]"), "--out", tmp_path / "a"), "seeds lists 0 twice"
    )
    one_line_error(run_cli("sweep", experiment(tmp_path, seeds="[-1]"), "--out", tmp_path / "b"), "seeds must be >= 0")
    dup = tmp_path / "dup.toml"
    dup.write_text(TINY.format(seeds="[0]", steps=10).replace('["MAX"]', '["MAX", "max"]'))
    one_line_error(run_cli("sweep", dup, "--out", tmp_path / "c"), "lists 'MAX' twice")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_corrupt_run_records_are_set_aside_and_recomputed(finished, tmp_path):
    tmp, out = finished
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    runs = sorted((copy / "runs").iterdir())
    good = json.loads((runs[1] / "result.json").read_text())
    (runs[0] / "result.json").write_text("garbage {")
    (runs[1] / "metrics.jsonl").write_text((runs[1] / "metrics.jsonl").read_text() + "[1, 2]\n")
    assert len(collect(copy)) == 1  # the unreadable record is not counted as a finished run
    s = run_cli("status", copy)
    assert s.returncode == 0 and "corrupt" in s.stdout
    r = run_cli("sweep", experiment(tmp), "--out", copy, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert len(collect(copy)) == 2 and list(runs[0].glob("result.json.corrupt-*"))
    assert json.loads((runs[1] / "result.json").read_text()) == good
    # a run whose result and metrics are both gone is trained again from its checkpoint
    (runs[1] / "result.json").unlink()
    (runs[1] / "metrics.jsonl").unlink()
    r = run_cli("sweep", experiment(tmp), "--out", copy, "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads((runs[1] / "result.json").read_text())["accuracy"] == good["accuracy"]
    (copy / "plan.json").write_text("not json")
    one_line_error(run_cli("status", copy), "unreadable plan.json")
    (copy / "plan.json").write_text("[1, 2]")
    one_line_error(run_cli("results", copy), "not a list of planned runs")


def test_readers_only_read(finished):
    tmp, out = finished
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    r = run_cli("results", out)
    assert r.returncode == 0 and len(pd.read_csv(pd.io.common.StringIO(r.stdout))) == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    one_line_error(run_cli("analyze", tmp), "holds no sweep")
    assert not (tmp / "report").exists()


def test_path_and_resource_errors_are_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run_cli("sweep", experiment(tmp_path), "--out", f), "")
    one_line_error(run_cli("train", MAX10, "--out", f), "is a file")
    one_line_error(run_cli("sweep", experiment(tmp_path), "--out", tmp_path / ("x" * 300)), "File name too long")
    one_line_error(run_cli("sweep", experiment(tmp_path), "--out", tmp_path / "w", "--workers", "-1"), "--workers")
    one_line_error(
        run_cli("sweep", experiment(tmp_path), "--out", tmp_path / "w", "--cohort-size", "0"), "--cohort-size"
    )
    assert not (tmp_path / "w").exists()


def test_usage_errors_are_one_line():
    one_line_error(run_cli("nonsense"), "No such command")
    one_line_error(run_cli("sweep", "--bogus"), "No such option: --bogus")
    one_line_error(run_cli("transition"), "Missing argument")


def test_a_failed_train_can_be_retried_and_a_changed_config_is_never_resumed(tmp_path):
    run, short = tmp_path / "run", ("--set", "train.steps=40")
    one_line_error(
        run_cli("train", MAX10, "--out", run, *short, "--init-from", tmp_path / "nowhere"), "is not a run directory"
    )
    assert not run.exists()  # the failed attempt wrote nothing
    r = run_cli("train", MAX10, "--out", run, "--quiet", *short, "--stop-after", "10")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", MAX10, "--out", run, "--quiet", "--set", "train.steps=20")
    assert r.returncode == 2 and "different config" in r.stderr
    r = run_cli("train", MAX10, "--out", run, "--quiet", "--resume", *short)
    assert r.returncode == 0, r.stderr  # the retry of the same config is not refused
    one_line_error(
        run_cli("train", MAX10, "--out", run, "--resume", *short, "--set", "train.lr=0.01"), "different config"
    )
    mode = stat.S_IMODE((run / "result.json").stat().st_mode)
    assert mode == 0o666 & ~_umask()  # like every other file the tool writes, not 0600
    other = tmp_path / "other"
    one_line_error(
        run_cli("train", MAX10, "--out", other, "--init-from", run, *short, "--set", "model.width=16"), "another shape"
    )


def test_an_empty_config_is_refused(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    one_line_error(run_cli("train", empty, "--out", tmp_path / "r"), "is empty")


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_a_second_sweep_on_the_same_directory_is_refused(finished):
    import fcntl

    tmp, out = finished
    with open(out / ".sweep.lock", "a") as f:  # as a running sweep driver holds it
        fcntl.flock(f, fcntl.LOCK_EX)
        one_line_error(run_cli("sweep", experiment(tmp), "--out", out), "in use by another process")


def test_a_full_disk_is_one_line_and_heals_on_rerun(tmp_path):
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        r = run_cli("sweep", experiment(tmp_path), "--out", mnt / "sweep", "--workers", "1")
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
        assert "No space left on device" in r.stderr
        assert not list((mnt / "sweep").rglob("result.json"))  # nothing half-written counts as finished
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        r = run_cli("sweep", experiment(tmp_path), "--out", mnt / "sweep", "--workers", "1")
        assert r.returncode == 0, r.stderr
        assert len(collect(mnt / "sweep")) == 2
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1e3, 3e3, 1e4, 3e4, 0.0, -5.0, float("nan"), float("inf")]),
            st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))),
            st.integers(0, 4),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_points_table_gives_finite_output_or_one_clear_error(points):
    import numpy as np

    from jointtask.analysis.transition import fit_transition
    from jointtask.errors import UserError

    P, A, S = (np.array(x) for x in zip(*points))
    try:
        t = fit_transition(P, A, S, n_boot=20)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return
    d = t.to_dict()
    for k in ("p_star", "ci_low", "ci_high", "p50", "p50_ci_low", "p50_ci_high"):
        assert d[k] is None or (np.isfinite(d[k]) and d[k] > 0), (k, d)
    assert d["censored"] in ("none", "above", "below") and (d["p_star"] is None) == (d["censored"] != "none")


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["lr", "beta1", "beta2", "weight_decay", "grad_clip", "steps", "batch_size", "ceiling", "warmup_fraction"]
        ),
        st.one_of(
            st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)
        ),
        max_size=4,
    ),
    st.one_of(st.integers(-2, 64), st.booleans()),
)
def test_any_config_is_valid_or_refused_in_one_line(train, width):
    import math

    from jointtask.errors import UserError
    from jointtask.train.config import config_from_dict

    try:
        cfg = config_from_dict({"train": train, "model": {"width": width}})
    except UserError as e:
        assert "\n" not in str(e)
        return
    t = cfg.train
    assert all(math.isfinite(v) for v in (t.lr, t.beta1, t.beta2, t.weight_decay, t.grad_clip))
    assert 0 <= t.beta1 < 1 and 0 <= t.beta2 < 1 and t.lr > 0 and t.steps >= 1 and not isinstance(cfg.model.width, bool)
    assert cfg.model.width >= 1


def test_an_internal_error_prints_one_line_and_where_the_traceback_is(tmp_path, monkeypatch, capsys):
    import jointtask.analysis.transition as transition
    from jointtask.cli import main

    def broken(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(transition, "fit_transition", broken)
    f = tmp_path / "points.csv"
    f.write_text("params,accuracy,seed\n1000,0.5,0\n")
    with pytest.raises(SystemExit) as e:
        main(["transition", str(f)])
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("internal error: RuntimeError: a bug (traceback in ")
    log = err[0].split("traceback in ")[1].rstrip(")")
    assert "RuntimeError: a bug" in open(log).read()


# ---- the second round of probes: each wrong number or late check, reproduced ----


def test_a_diverged_run_is_recorded_as_such_and_never_a_point(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", MAX10, "--out", run, "--quiet", "--set", "train.lr=1e30", "--set", "train.steps=40")
    assert r.returncode == 1 and "diverged" in r.stderr
    rec = json.loads((run / "result.json").read_text())
    assert rec["stop_reason"] == "diverged" and rec["accuracy"] == {} and rec["final_loss"] is None
    assert rec["steps"] < 40  # it stopped at once
    out = tmp_path / "sweep"
    r = run_cli("sweep", experiment(tmp_path, seeds="[0, 1, 2]"), "--out", out, "--set", "base.train.lr=1e30")
    assert r.returncode == 0 and r.stderr.count("diverged (recorded, never a point") == 3
    df = collect(out)
    assert len(df) == 3 and (df.stop_reason == "diverged").all() and df.accuracy.isna().all()
    from jointtask.analysis.tables import transitions

    trans, fits = transitions(df, n_boot=10)
    assert trans.n_diverged.tolist() == [3] and not fits  # no point left to fit


def results_table(tmp_path, n_seeds=3):
    rows = [
        {"run_id": f"r{w}{s}", "mixture": "ADD", "target_op": "ADD", "width": w, "seed": s}
        | {"params": w * 100, "accuracy": a}
        for w, a in ((8, 0.1), (16, 0.5), (32, 0.95))
        for s in range(n_seeds)
    ]
    return pd.DataFrame(rows)


def setcell(d, row, col, value):
    d = d.copy()
    d[col] = d[col].astype(object)
    d.loc[row, col] = value
    return d


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: pd.concat([d, d.iloc[:2]]), "duplicated row (run_id r80"),
        (
            lambda d: pd.concat([d, d.iloc[:1].assign(run_id="other")]),
            "duplicated row (mixture ADD, target_op ADD, params 800, seed 0",
        ),
        (lambda d: setcell(d, 4, "seed", ""), "is not an integer"),
        (lambda d: setcell(d, 4, "seed", "abc"), "seed 'abc' is not an integer"),
        (lambda d: setcell(d, 2, "accuracy", "high"), "accuracy 'high' is not a number"),
        (lambda d: setcell(d, 3, "mixture", "ADD++MAX"), "malformed list of operations"),
        (lambda d: setcell(d, 3, "mixture", "FOO"), "unknown operation"),
        (lambda d: setcell(d, 3, "mixture", ""), "line 5"),
    ],
)
def test_a_table_that_could_give_a_wrong_number_is_refused(tmp_path, damage, needle):
    f = tmp_path / "results.csv"
    results_table(tmp_path).to_csv(f, index=False)
    assert run_cli("ratios", f).returncode == 0
    damage(results_table(tmp_path)).to_csv(f, index=False)
    for cmd in (("ratios", f), ("claims", tmp_path)):
        if cmd[0] == "claims":
            (tmp_path / "strict-c1").mkdir(exist_ok=True)
            (tmp_path / "strict-c1" / "results.csv").write_text(f.read_text())
            cmd = ("claims", tmp_path / "strict-c1")
        one_line_error(run_cli(*cmd), needle)


def test_a_points_table_with_repeated_rows_or_seedless_points_is_refused(tmp_path):
    f = tmp_path / "points.csv"
    d = results_table(tmp_path)[["params", "accuracy", "seed"]]
    pd.concat([d, d.iloc[:3]]).to_csv(f, index=False)
    one_line_error(run_cli("transition", f), "two points for seed 0 at 800 parameters")
    setcell(d, 1, "seed", "").to_csv(f, index=False)
    one_line_error(run_cli("transition", f), "seeds must be integers")


def test_late_checks_come_first(tmp_path):
    # in a fresh interpreter once: the process's own exit status and stderr, as a user sees them
    one_line_error(
        run_cli("reproduce", "quick", "--out", tmp_path / "q", "--workers", "0", process=True), "--workers must be >= 1"
    )
    one_line_error(run_cli("reproduce", "quick", "--out", tmp_path / "q", "--workers", "-1"), "--workers must be >= 1")
    assert not (tmp_path / "q").exists()
    (tmp_path / "afile").write_text("")
    one_line_error(run_cli("bench", "--quick", "--out", tmp_path / "afile" / "b.json"), "does not exist")
    one_line_error(run_cli("bench", "--quick", "--device", "tpu", "--out", tmp_path / "b.json"), "--device")
    for cmd in ("ratios", "claims", "analyze"):
        one_line_error(run_cli(cmd, tmp_path, "--n-boot", "0"), "--n-boot must be >= 1")
    one_line_error(run_cli("train", MAX10, "--out", tmp_path / "t", "--stop-after", "-5"), "--stop-after")
    one_line_error(run_cli("data", "--ops", "ADD++MAX", "--modulus", "10", "--out", tmp_path / "d.jsonl"), "malformed")
    for setting, needle in (
        ("model.width=1000000", "GiB"),
        ("train.batch_size=100000000", "GiB"),
        ("task.modulus=1000000", "training samples"),
    ):
        one_line_error(run_cli("train", MAX10, "--out", tmp_path / "big", "--set", setting), needle)
        assert not (tmp_path / "big").exists()
    big = experiment(tmp_path)
    one_line_error(run_cli("sweep", big, "--out", tmp_path / "bigsweep", "--set", "sweep.widths=[1000000]"), "GiB")
    assert not (tmp_path / "bigsweep").exists()


def test_altered_cached_data_are_rebuilt(tmp_path):
    import numpy as np

    from jointtask.tasks.dataset import build_task_data, cache_dir
    from jointtask.train.config import load_config

    cfg = load_config(MAX10)
    before = set(cache_dir().glob("*.npz"))
    first = build_task_data(cfg.task, cfg.data, cfg.seed)
    new = sorted(set(cache_dir().glob("*.npz")) - before) or sorted(cache_dir().glob("*.npz"))
    for path in new:  # every cached set: answers changed, arrays saved back under the old checksum
        z = dict(np.load(path))
        z["answers"] = (z["answers"] + 1) % 7
        np.savez(path.with_suffix(".tmp.npz"), **z)
        path.with_suffix(".tmp.npz").replace(path)
    again = build_task_data(cfg.task, cfg.data, cfg.seed)
    assert (again.train.answers == first.train.answers).all()
    assert (again.test_sets["MAX"].answers == first.test_sets["MAX"].answers).all()
