import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from jointtask.errors import UserError
from jointtask.sweep.experiment import load_experiment, plan
from jointtask.sweep.results import collect, status

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here trains, or starts processes

SMOKE = ROOT / "experiments" / "smoke.toml"
SAME = [
    "run_id",
    "mixture",
    "target_op",
    "width",
    "seed",
    "params",
    "accuracy",
    "accuracy_train",
    "steps",
    "tokens_seen",
]


def table(out):
    df = collect(out)
    return df[SAME].sort_values(["run_id", "target_op"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted smoke sweep, local backend."""
    out = tmp_path_factory.mktemp("ref") / "sweep"
    r = run_cli("sweep", SMOKE, "--out", out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    return out


def test_smoke_sweep_table_and_cli(reference):
    r = run_cli("results", reference, "--format", "csv")
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("run_id,mixture,target_op,width,seed,params")
    assert len(lines) == 1 + 8  # 2 mixtures x 2 widths x 2 seeds, one target
    df = collect(reference)
    assert len(df) == 8 and df.run_id.is_unique and set(df.mixture) == {"MAX", "MAX+MIN"}
    assert (df.test_scored > 0).all() and (df.budget_steps == df.steps.max()).all()
    s = run_cli("status", reference)
    assert "8 runs: 8 done" in s.stdout
    # a second start trains nothing
    again = run_cli("sweep", SMOKE, "--out", reference)
    assert again.returncode == 0 and "0 trained, 8 already done" in again.stderr


def test_a_sweep_in_cohorts_killed_and_resumed_gives_the_solo_table(tmp_path, reference):
    """Seed 0 of the smoke sweep in cohorts (the runs of one width), killed once the runs of a cohort
    have a checkpoint and none has finished, then resumed: the same runs, the same results as alone."""
    out = tmp_path / "cohorts"
    args = [str(SMOKE), "--out", str(out), "--workers", "2", "--cohort-size", "4", "--set", "sweep.seeds=[0]"]
    cmd = [sys.executable, "-m", "jointtask.cli", "sweep", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
        if sum((r / "checkpoint.pt").exists() for r in runs) >= 2 or any((r / "result.json").exists() for r in runs):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not any((r / "result.json").exists() for r in (out / "runs").glob("*"))  # killed part-way
    r = run_cli("sweep", *args)
    assert r.returncode == 0, r.stderr
    assert "width 8: cohort size 4" in r.stderr and "4 trained, 0 already done" in r.stderr
    assert json.loads((out / "sweep_log.jsonl").read_text().splitlines()[-1])["cohort_size"] == 4
    a, b = table(reference), table(out)
    a = a[a.run_id.isin(b.run_id)].reset_index(drop=True)
    assert len(b) == 4 and list(a.run_id) == list(b.run_id) and (a.steps == b.steps).all()
    assert (a.accuracy - b.accuracy).abs().max() <= 0.02


def test_the_cohorts_of_one_cuda_device_train_in_one_process_each_as_alone(tmp_path, reference):
    from jointtask.sweep.placement import cohorts, one_process_per_device
    from jointtask.sweep.worker import execute_groups

    runs = plan(load_experiment(SMOKE, ["sweep.seeds=[0]"]))
    groups, _ = cohorts(runs, 4)
    assert [len(g) for g in groups] == [2, 2]  # seed 0: two mixtures at each of two widths
    on = lambda g, device: [
        r.model_copy(
            update={
                "config": r.config.model_copy(update={"train": r.config.train.model_copy(update={"device": device})})
            }
        )
        for r in g
    ]
    assert (
        one_process_per_device([on(g, "cuda") for g in groups] + [on(groups[0][:1], "cuda")])
        == [
            [on(g, "cuda") for g in groups],  # one process for both cohorts
            [on(groups[0][:1], "cuda")],  # a run alone keeps its own
        ]
    )
    assert one_process_per_device(groups) == [[g] for g in groups]  # on a CPU, a process per cohort
    from jointtask.train.cohort import run_memory

    cuda = [on(g, "cuda") for g in groups]
    both = sum(run_memory(r.config) for g in cuda for r in g)
    assert one_process_per_device(cuda, free_bytes=2 * both) == [cuda]  # both fit half the memory
    assert one_process_per_device(cuda, free_bytes=2 * both - 2) == [[g] for g in cuda]  # one at a time
    # what that one process does, here on the CPU: both cohorts taking steps in turn, each run as alone
    outcomes = execute_groups([[r.model_dump(mode="json") for r in g] for g in groups], str(tmp_path))
    ref = table(reference)
    for r, o in zip([r for g in groups for r in g], outcomes):
        assert o["result"]["run_id"] == r.run_id
        rows = ref[ref.run_id == r.run_id]
        assert len(rows) == 1
        for _, row in rows.iterrows():
            assert abs(o["result"]["accuracy"][row.target_op] - row.accuracy) <= 0.02


def test_sigkill_part_way_then_resume(tmp_path, reference):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "jointtask.cli", "sweep", str(SMOKE), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill once some runs are finished and others are part-way (a checkpoint but no result)
    while time.time() < deadline:
        runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
        done = [r for r in runs if (r / "result.json").exists()]
        partial = [r for r in runs if (r / "checkpoint.pt").exists() and not (r / "result.json").exists()]
        if done and partial:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, all at once
    assert proc.wait(timeout=30) == -signal.SIGKILL
    finished_before = sum((r / "result.json").exists() for r in (out / "runs").glob("*"))
    assert 0 < finished_before < 8
    r = run_cli("sweep", SMOKE, "--out", out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert f"{8 - finished_before} trained, {finished_before} already done" in r.stderr
    pd.testing.assert_frame_equal(table(out), table(reference))


def test_a_stopped_sweep_logs_the_time_it_ran_and_what_it_trained(tmp_path):
    """SIGTERM (or Ctrl-C) stops a sweep with exit code 130 after it has logged its wall time and
    the runs it finished, so that the time a long reproduction took is measured across stops."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "jointtask.cli", "sweep", str(SMOKE), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and sum(1 for _ in (out / "runs").glob("*/result.json")) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)  # the driver alone: it stops its workers itself, at once
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    finished = sum(1 for _ in (out / "runs").glob("*/result.json"))
    (log,) = [json.loads(line) for line in (out / "sweep_log.jsonl").read_text().splitlines()]
    # a worker may finish a run after the driver's last count: the log never counts more than is there
    assert log["trained"] <= finished < 8 and log["seconds"] > 0 and not (out / "driver.json").exists()
    r = run_cli("sweep", SMOKE, "--out", out, "--workers", "2")
    assert r.returncode == 0 and f"{8 - finished} trained, {finished} already done" in r.stderr
    assert len((out / "sweep_log.jsonl").read_text().splitlines()) == 2


def test_reuse_copies_finished_runs_and_trains_only_the_rest(tmp_path, reference):
    """A sweep given another sweep's directory takes its finished runs (same run ids: the same
    runs) and trains only what that directory lacks; a half-trained run there is not taken."""
    src = tmp_path / "src"
    shutil.copytree(reference, src)
    runs = plan(load_experiment(SMOKE))
    half = src / "runs" / runs[0].run_id
    (half / "result.json").unlink()  # as a run stopped part-way leaves it
    out = tmp_path / "out"
    r = run_cli("sweep", SMOKE, "--out", out, "--workers", "2", "--reuse", src)
    assert r.returncode == 0, r.stderr
    assert "7 finished runs taken from" in r.stderr and "1 trained, 7 already done" in r.stderr
    pd.testing.assert_frame_equal(table(out), table(reference))
    for run in runs[1:]:  # a copy, byte for byte
        assert (out / "runs" / run.run_id / "metrics.jsonl").read_bytes() == (
            reference / "runs" / run.run_id / "metrics.jsonl"
        ).read_bytes()
    bad = run_cli("sweep", SMOKE, "--out", tmp_path / "o2", "--reuse", tmp_path / "nothing")
    assert bad.returncode == 2 and "holds no runs/ directory" in bad.stderr and not (tmp_path / "o2").exists()


def test_one_failing_run_is_reported_and_others_finish(tmp_path):
    out = tmp_path / "sweep"
    runs = plan(load_experiment(SMOKE))
    bad = runs[3]
    run_dir = out / "runs" / bad.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(runs[0].config.to_toml())  # another run's config: never resumed
    r = run_cli("sweep", SMOKE, "--out", out, "--workers", "2")
    assert r.returncode == 1
    assert "7 trained, 0 already done, 1 failed" in r.stderr
    assert f"failed: {bad.run_id}: run directory" in r.stderr and "holds a different config" in r.stderr
    s = status(out)
    assert s["done"] == 7 and s["failed"] == 1 and s["failures"][0]["run_id"] == bad.run_id
    assert len(collect(out)) == 7


def test_run_labels_parse_and_print_back():
    from jointtask.sweep.experiment import Label

    for text, kind in (
        ("ADD+MAX", "mixture"),
        ("ADD@9000", "control"),
        ("MAX+MIN>ADD", "transfer"),
        ("ADD+MAX@4500", "control"),
    ):
        label = Label.parse(text)
        assert str(label) == text and label.kind == kind
    assert Label.parse("max>add").ops == ("ADD",) and Label.parse("max>add").pretrain == ("MAX",)
    with pytest.raises(UserError, match="malformed run label"):
        Label.parse("ADD@many")


def test_planned_runs_carry_their_kind_and_pretraining():
    from jointtask.sweep.experiment import experiment_from_dict

    base = {"task": {"modulus": 5, "max_depth": 1}, "train": {"steps": 10}}
    exp = experiment_from_dict(
        {
            "name": "k",
            "base": base,
            "sweep": {
                "mixtures": ["ADD", "ADD+MAX"],
                "widths": [8],
                "seeds": 1,
                "budget": "exposure",
                "transfer": {"pretrain": "MAX", "pretrain_steps": 5},
            },
        }
    )
    runs = {r.mixture: r for r in plan(exp)}
    assert {m: r.kind for m, r in runs.items()} == {
        "ADD": "mixture",
        "ADD+MAX": "mixture",
        "ADD@20": "control",
        "MAX>ADD": "transfer",
        "MAX>ADD+MAX": "transfer",
        "ADD@15": "control",
        "ADD+MAX@25": "control",
        "MAX@20": "control",
    }
    t = runs["MAX>ADD"]
    assert t.pretrain is not None and t.pretrain.config.task.ops == ["MAX"] and t.pretrain.config.train.steps == 5
    assert t.config.train.steps == 10 and runs["ADD@15"].config.train.steps == 15
    assert runs["ADD@20"].config.task.ops == ["ADD"] and runs["ADD@20"].config.train.steps == 20


def test_a_transfer_grid_of_its_own_keeps_the_scratch_curve_and_its_run_ids():
    from jointtask.sweep.experiment import experiment_from_dict

    def runs(**transfer):
        sweep = {"mixtures": ["ADD"], "widths": [8, 12], "seeds": 3}
        exp = experiment_from_dict(
            {
                "name": "t",
                "base": {"task": {"modulus": 5, "max_depth": 1}, "train": {"steps": 10}},
                "sweep": {**sweep, "transfer": {"pretrain": "MAX", "pretrain_steps": 5, **transfer}},
            }
        )
        return {(r.mixture, r.width, r.seed): r.run_id for r in plan(exp)}

    every = runs()
    assert len(every) == 3 * 2 * 3  # ADD, MAX>ADD and ADD@15 at each width and seed
    own = runs(widths=[4, 8], seeds=2)
    assert {k for k in own if k[0] == "ADD"} == {k for k in every if k[0] == "ADD"}  # the scratch curve stays
    assert {k for k in own if k[0] != "ADD"} == {
        (m, w, s) for m in ("MAX>ADD", "ADD@15") for w in (4, 8) for s in (0, 1)
    }
    assert all(every[k] == i for k, i in own.items() if k in every)  # shared runs keep their ids
    # one grid given on the command line is every curve's, the transfer's too
    preset = ROOT / "src" / "jointtask" / "presets" / "cpu" / "transfer.toml"
    shrunk = plan(load_experiment(preset, ["sweep.widths=[4]", "sweep.seeds=[0]"]))
    assert sorted(r.mixture for r in shrunk) == ["ADD", "ADD@25000", "MAX+MED>ADD"]
    with pytest.raises(UserError, match="transfer.widths lists 4 twice"):
        runs(widths=[4, 4])
    with pytest.raises(UserError, match="transfer.seeds must hold seeds"):
        runs(seeds=[])


def test_seeds_per_mixture_plan_each_curve_its_own_seeds_and_share_the_rest():
    from jointtask.sweep.experiment import experiment_from_dict

    def runs(seeds):
        exp = experiment_from_dict(
            {
                "name": "s",
                "base": {"task": {"modulus": 5, "max_depth": 1}, "train": {"steps": 10}},
                "sweep": {"mixtures": ["ADD", "ADD+MAX"], "widths": [8, 12], "seeds": seeds},
            }
        )
        return plan(exp)

    both = runs(2)
    more = runs({"ADD": 4, "add + MAX": [0, 1]})  # keys spelled as mixtures are anywhere
    assert sorted({r.seed for r in more if r.mixture == "ADD"}) == [0, 1, 2, 3]
    assert sorted({r.seed for r in more if r.mixture == "ADD+MAX"}) == [0, 1]
    assert len(more) == 2 * 4 + 2 * 2
    assert {r.run_id for r in both} <= {r.run_id for r in more}  # the same runs keep their ids
    with pytest.raises(UserError, match="seeds per mixture must name exactly"):
        runs({"ADD": 4})
    with pytest.raises(UserError, match="lists 1 twice"):
        runs({"ADD": [1, 1], "ADD+MAX": 2})


def test_more_seeds_at_some_widths_add_runs_there_and_keep_the_rest():
    from jointtask.sweep.experiment import experiment_from_dict

    def runs(more, seeds=2):
        sweep = {"mixtures": ["ADD", "ADD+MAX"], "widths": [8, 12, 16], "seeds": seeds, "more_seeds": more}
        exp = experiment_from_dict(
            {"name": "s", "base": {"task": {"modulus": 5, "max_depth": 1}, "train": {"steps": 10}}, "sweep": sweep}
        )
        return exp, plan(exp)

    _, plain = runs({})
    exp, more = runs({"add": {"widths": [8, 16], "seeds": 5}})
    seeds = {w: sorted(r.seed for r in more if r.mixture == "ADD" and r.width == w) for w in (8, 12, 16)}
    assert seeds == {8: [0, 1, 2, 3, 4], 12: [0, 1], 16: [0, 1, 2, 3, 4]}
    assert sorted(r.seed for r in more if r.mixture == "ADD+MAX") == [0, 0, 0, 1, 1, 1]
    assert {r.run_id for r in plain} <= {r.run_id for r in more} and len(more) == len(plain) + 6
    assert "more_seeds" in exp.model_dump(mode="json")["sweep"]
    assert "more_seeds" not in runs({})[0].model_dump(mode="json")["sweep"]  # unused: experiment.json as before
    with pytest.raises(UserError, match=r"more_seeds.ADD.widths \[10\] are not all among its widths"):
        runs({"ADD": {"widths": [10], "seeds": 5}})
    with pytest.raises(UserError, match="must hold the mixture's seeds"):
        runs({"ADD": {"widths": [8], "seeds": [2, 3]}})
    with pytest.raises(UserError, match="names 'MAX', not one of the mixtures"):
        runs({"MAX": {"widths": [8], "seeds": 5}})


def test_bad_experiment_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nmixtures = ["ADD+FOO"]\nwidths = [8]\n')
    r = run_cli("sweep", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "unknown operation 'FOO'" in r.stderr and "Traceback" not in r.stderr
    bad.write_text('[sweep]\nmixtures = ["ADD"]\nwidths = [8]\nwidht = 3\n[base.task]\nmodulus = 5\n')
    r = run_cli("sweep", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "widht" in r.stderr
    assert not (tmp_path / "o").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_cluster_on_loopback_gives_the_same_table(tmp_path, reference):
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        pytest.fail("ray is not installed; scripts/setup.sh installs it")
    # Ray >= 2.59 authenticates with a token; cluster and client must agree on it. An explicit
    # token keeps the test independent of whatever ~/.ray/auth_token this machine holds.
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    port = _free_port()
    start = subprocess.run(
        [
            ray,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        out = tmp_path / "sweep"  # seed 0 of the smoke sweep, in cohorts of 2 runs: one Ray task each
        address = f"127.0.0.1:{port}"
        r = run_cli(
            "sweep",
            SMOKE,
            "--out",
            out,
            "--backend",
            "ray",
            "--address",
            address,
            "--set",
            "sweep.seeds=[0]",
            "--cohort-size",
            "2",
            env=env,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        a, b = table(reference), table(out)
        a = a[a.run_id.isin(b.run_id)].reset_index(drop=True)
        assert len(b) == 4 and list(a.run_id) == list(b.run_id) and (a.steps == b.steps).all()
        assert (a.accuracy - b.accuracy).abs().max() <= 0.02
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_exposure_budget_scales_steps_and_plans_the_equal_steps_control():
    equal = load_experiment(SMOKE)
    exposure = load_experiment(SMOKE, ["sweep.budget=exposure"])
    base = equal.base["train"]["steps"]
    assert all(run.config.train.steps == base for run in plan(equal))
    by_id = {r.run_id: r for r in plan(equal)}
    runs = plan(exposure)
    for run in runs:
        ops = run.mixture.split("@")[0].split("+")
        if "@" in run.mixture:  # the control: the target alone, for the mixture's steps
            assert len(ops) == 1 and run.config.train.steps == int(run.mixture.split("@")[1])
            assert run.config.task.ops == ops
        else:
            assert run.config.train.steps == base * len(ops)
            # a single-op run is the very same run under either budget; a mixture is a new one
            assert (run.run_id in by_id) == (len(ops) == 1)
    mixtures = {r.mixture for r in runs}
    for m in mixtures:
        ops = m.split("+")
        if len(ops) > 1:
            assert {f"{t}@{base * len(ops)}" for t in (exposure.sweep.targets or ops) if t in ops} <= mixtures
    assert len({r.run_id for r in runs}) == len(runs)


def test_runs_train_in_rounds_of_seeds(tmp_path):
    """With one worker runs finish in the order they are handed out: every curve (mixture, width)
    its first seed before any its second, so a sweep stopped part-way holds whole curves."""
    short = [f"--set=base.train.{k}" for k in ("steps=20", "eval_every=10", "checkpoint_every=10")]
    r = run_cli("sweep", SMOKE, "--out", tmp_path / "s", "--workers", "1", *short)
    assert r.returncode == 0, r.stderr
    done = [line.split("done: ")[1].split(" (")[0] for line in r.stderr.splitlines() if "] done: " in line]
    assert len(done) == 8
    first, second = done[:4], done[4:]
    assert all(d.endswith("seed 0") for d in first) and all(d.endswith("seed 1") for d in second)
    curves = {d.rsplit(" seed", 1)[0] for d in first}
    assert curves == {f"{m} width {w}" for m in ("MAX", "MAX+MIN") for w in (8, 16)}
    assert [d.rsplit(" seed", 1)[0] for d in second] == [d.rsplit(" seed", 1)[0] for d in first]
