"""Run records: the budget flag, a sweep resumed over records without checkpoints, a report
rebuilt from records, and records that must not be trusted."""

import json
import shutil

import pandas as pd
import pytest

from jointtask.errors import UserError
from jointtask.sweep.executors import LocalExecutor
from jointtask.sweep.experiment import load_experiment
from jointtask.sweep.records import export_records
from jointtask.sweep.results import collect
from jointtask.sweep.runner import run_sweep
from jointtask.train.run_dir import IMPROVING_DELTA, still_improving

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here trains, or starts processes

SMOKE = ROOT / "experiments" / "smoke.toml"


def evals(accs, every=100):
    return [{"step": every * (i + 1), "accuracy_validation": {"ADD": a}} for i, a in enumerate(accs)]


def test_still_improving_reads_the_last_fifth_of_the_budget():
    # 10 evaluations over 1,000 steps: the last fifth is steps 900 and 1,000
    rising = evals([0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5 + IMPROVING_DELTA])
    assert still_improving(rising, 1000, "budget") == {"ADD": True}
    flat = evals([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8 + IMPROVING_DELTA / 2])
    assert still_improving(flat, 1000, "budget") == {"ADD": False}
    assert still_improving(rising, 1000, "ceiling") == {"ADD": False}  # stopped early: finished learning
    assert still_improving(rising[:7], 1000, "budget") == {"ADD": False}  # no evaluation in the last fifth


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "sweep"
    r = run_cli("sweep", SMOKE, "--out", out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    r = run_cli("analyze", out)
    assert r.returncode == 0, r.stderr
    return out


def test_results_carry_protocol_and_budget_flag(smoke):
    df = collect(smoke)
    assert set(df.protocol) == {"paper"} and df.still_improving.dtype == bool
    record = json.loads(next((smoke / "runs").glob("*/result.json")).read_text())
    assert record["protocol"] == "paper" and set(record["still_improving"]) >= {"MAX"}
    flags = {}
    for rid in df.run_id:
        rows = [json.loads(x) for x in (smoke / "runs" / rid / "metrics.jsonl").read_text().splitlines()]
        rec = json.loads((smoke / "runs" / rid / "result.json").read_text())
        flags[rid] = still_improving(rows, rec["steps"], rec["stop_reason"])["MAX"]
    assert df.set_index("run_id").still_improving.to_dict() == flags
    trans = pd.read_csv(smoke / "report" / "transitions.csv")
    assert "improving_share" in trans.columns


def test_a_sweep_over_records_trains_nothing_and_the_report_is_rebuilt(smoke, tmp_path):
    rec = tmp_path / "records"
    r = run_cli("export", smoke, "--out", rec)
    assert r.returncode == 0, r.stderr and "8 runs copied" in r.stderr
    kept = sorted(p.parent.name for p in (rec / "runs").glob("*/checkpoint.pt"))
    assert len(kept) == 2  # the runs the report reads (one per mixture), no other checkpoint
    assert not list(rec.rglob("*.lock")) and not list(rec.rglob("error.json"))
    again = run_cli("export", smoke, "--out", rec)
    assert again.returncode == 0 and "0 runs copied, 8 already there" in again.stderr
    # resumed over records alone: nothing is trained, the table is the same
    moved = tmp_path / "moved"
    shutil.copytree(rec, moved)
    r = run_cli("sweep", SMOKE, "--out", moved)
    assert r.returncode == 0 and "0 trained, 8 already done" in r.stderr
    assert collect(moved).equals(collect(smoke))
    # the report rebuilt elsewhere from the records: the same results table as the sweep's own
    r = run_cli("analyze", rec, "--out", tmp_path / "rebuilt")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rebuilt" / "results.csv").read_text() == (smoke / "report" / "results.csv").read_text()
    assert (tmp_path / "rebuilt" / "embeddings.csv").read_text() == (smoke / "report" / "embeddings.csv").read_text()


def test_a_sweep_without_training_takes_the_shared_runs_only(smoke, tmp_path):
    """--no-train: an experiment sharing runs with finished records gets those runs and its plan,
    and trains nothing of what is left (nor logs a training session)."""
    rec = tmp_path / "records"
    export_records(smoke, rec)
    grown = tmp_path / "grown"
    r = run_cli("sweep", SMOKE, "--set", "sweep.widths=[4, 8, 16]", "--out", grown, "--reuse", rec, "--no-train")
    assert r.returncode == 0, r.stderr
    assert "0 trained, 8 already done, 0 failed, 4 left untrained" in r.stderr
    assert collect(grown).equals(collect(smoke)) and not (grown / "sweep_log.jsonl").exists()
    st = run_cli("status", grown, "--json")
    assert (json.loads(st.stdout)["done"], json.loads(st.stdout)["pending"]) == (8, 4)
    bad = run_cli("sweep", SMOKE, "--out", grown, "--no-train", "--adaptive")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--no-train" in bad.stderr


def test_a_sweep_trains_only_the_mixtures_named_first(smoke, tmp_path):
    """--only: the named mixture's runs are trained now (the width added to the plan), the other
    curve's waits in the plan; the next sweep without it trains the rest and nothing twice. A name
    that is not a mixture of the experiment is refused before anything is written."""
    rec = tmp_path / "records"
    export_records(smoke, rec)
    grown = tmp_path / "grown"
    widths = ["--set", "sweep.widths=[4, 8, 16]"]
    bad = run_cli("sweep", SMOKE, *widths, "--out", grown, "--only", "MAX+MED", "--reuse", rec)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "MAX+MED" in bad.stderr
    assert not grown.exists()
    r = run_cli("sweep", SMOKE, *widths, "--out", grown, "--only", "MAX+MIN", "--reuse", rec, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "2 trained, 8 already done, 0 failed, 2 left untrained" in r.stderr
    df = collect(grown)
    assert set(df[df.width == 4].mixture) == {"MAX+MIN"} and len(df[df.width == 4]) == 2
    r = run_cli("sweep", SMOKE, *widths, "--out", grown, "--workers", "2")
    assert r.returncode == 0 and "2 trained, 10 already done, 0 failed" in r.stderr
    assert len(collect(grown).drop_duplicates("run_id")) == 12


def test_records_follow_an_experiment_that_grew_and_refuse_one_that_shrank(smoke, tmp_path):
    rec = tmp_path / "records"
    export_records(smoke, rec)
    grown = tmp_path / "grown"  # a third width: the smoke sweep's runs reused, four more trained
    s = run_sweep(load_experiment(SMOKE, ["sweep.widths=[4, 8, 16]"]), grown, LocalExecutor(2), reuse=[rec])
    assert (s["done"], s["skipped"], s["failed"]) == (4, 8, 0)
    r = run_cli("export", grown, "--out", rec, "--no-checkpoints")
    assert r.returncode == 2 and "another experiment" in r.stderr and "--replan" in r.stderr
    assert len(json.loads((rec / "plan.json").read_text())) == 8  # nothing written
    assert export_records(grown, rec, replan=True) == {"copied": 4, "present": 8, "unfinished": 0}
    assert (rec / "experiment.json").read_bytes() == (grown / "experiment.json").read_bytes()
    assert collect(rec).equals(collect(grown))
    # the records' sweep log keeps the smoke sweep's entry and adds the grown one's, once
    logs = [(d / "sweep_log.jsonl").read_text().splitlines() for d in (smoke, grown, rec)]
    assert logs[2] == logs[0] + logs[1] and [json.loads(x)["trained"] for x in logs[1]] == [4]
    export_records(grown, rec, replan=True)
    assert (rec / "sweep_log.jsonl").read_text().splitlines() == logs[2]
    # the smaller experiment again: its plan lacks the four new runs, which are not dropped
    with pytest.raises(UserError, match="lacks 4 of its finished runs"):
        export_records(smoke, rec, replan=True)
    assert len(json.loads((rec / "plan.json").read_text())) == 12
    # runs planned there but never finished do not hold it: the plan may shrink back over them
    for p in json.loads((rec / "plan.json").read_text()):
        if p["width"] == 4:
            shutil.rmtree(rec / "runs" / p["run_id"])
    assert export_records(smoke, rec, replan=True) == {"copied": 0, "present": 8, "unfinished": 0}
    assert len(json.loads((rec / "plan.json").read_text())) == 8


def test_untrusted_records_are_retrained(smoke, tmp_path):
    """Another run's result.json, an accuracy out of range, a damaged checkpoint under a damaged
    result: the next sweep says so and retrains the run, and the table comes out the same."""
    out = tmp_path / "sweep"
    shutil.copytree(smoke, out)
    runs = sorted((out / "runs").iterdir())
    a, b, c = runs[0], runs[1], runs[2]
    shutil.copyfile(b / "result.json", a / "result.json")  # a foreign record
    rec = json.loads((b / "result.json").read_text())
    (b / "result.json").write_text(json.dumps({**rec, "accuracy": {"MAX": 7.5}}))
    (c / "result.json").write_text((c / "result.json").read_text()[:40])
    (c / "checkpoint.pt").write_bytes((c / "checkpoint.pt").read_bytes()[:100])
    assert {p.parent.name for p in out.glob("runs/*/result.json")} >= {a.name, b.name, c.name}
    assert len(collect(out)) == 5  # none of the three is read as a point
    r = run_cli("sweep", SMOKE, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "3 trained, 5 already done" in r.stderr and r.stderr.count("retrained") == 3
    same = ["run_id", "width", "seed", "params", "accuracy", "accuracy_train", "steps", "still_improving"]
    assert collect(out)[same].equals(collect(smoke)[same])


def test_a_committed_source_is_rebuilt_from_its_records(tmp_path):
    """Every committed source that keeps run records gives its committed results table from them
    (the table every other one of its tables and figures is computed from); `jointtask analyze`
    rebuilds one whole report, and a sweep of its experiment over a copy trains nothing."""
    from jointtask.sweep.results import collect

    results = ROOT / "docs" / "results"
    sources = [d for d in sorted(results.iterdir()) if (d / "runs").is_dir() and (d / "results.csv").exists()]
    assert sources
    for d in sources:
        assert collect(d).to_csv(index=False) == (d / "results.csv").read_text(), d.name
    r = run_cli("analyze", results / "regime-b256", "--out", tmp_path / "report", "--n-boot", "10")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report" / "results.csv").read_text() == (results / "regime-b256" / "results.csv").read_text()
    d = ROOT / "docs" / "results" / "regime-b256"
    shutil.copytree(d, tmp_path / "again")
    r = run_cli("sweep", ROOT / "experiments" / "cpu" / "regime-b256.toml", "--out", tmp_path / "again")
    assert r.returncode == 0 and "0 trained, 24 already done" in r.stderr


def test_a_damaged_checkpoint_the_report_reads_is_named_with_its_cure(smoke, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(smoke, out)
    from jointtask.analysis.sweep_analysis import representative_runs

    read = next(iter(representative_runs(out, collect(out)).values()))["run_id"]  # a run the report reads
    ck = out / "runs" / read / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:64])
    r = run_cli("analyze", out, "--n-boot", "20")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert ck.parent.name in r.stderr and "run its sweep again" in r.stderr
    shutil.rmtree(ck.parent)  # the cure it names
    assert run_cli("sweep", SMOKE, "--out", out).returncode == 0
    assert run_cli("analyze", out, "--n-boot", "20").returncode == 0
