"""The report renders from a tiny finished sweep, with every figure and table present."""

import json
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from jointtask.adaptive import adaptive_sweep
from jointtask.sweep.executors import LocalExecutor
from jointtask.sweep.experiment import experiment_from_dict
from jointtask.sweep.results import collect
from jointtask.sweep.runner import run_sweep
from jointtask.report import write_report

pytestmark = pytest.mark.slow  # every test here trains or starts processes

TINY = {
    "name": "tiny",
    "sweep": {"mixtures": ["MAX", "MAX+MIN"], "targets": ["MAX"], "widths": [4, 8, 16], "seeds": [0, 1, 2]},
    "base": {
        "task": {"modulus": 6, "max_depth": 1},
        "data": {"per_n": 60, "eval_count": 40, "eval_train_count": 20},
        "train": {"steps": 60, "batch_size": 32, "lr": 3e-3, "eval_every": 30, "checkpoint_every": 30},
    },
}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "sweep"
    exp = experiment_from_dict(TINY)
    s = run_sweep(exp, out, LocalExecutor(2))
    assert s["failed"] == 0
    return out


def test_report_has_every_figure_and_table(tiny_sweep):
    index, analysis = write_report(tiny_sweep, n_boot=30, n_perm=49)
    assert analysis.claims.empty and not (tiny_sweep / "report" / "claims.csv").exists()
    rep = tiny_sweep / "report"
    html = index.read_text()
    for name in ("accuracy_MAX.png", "embedding_pca.png", "embedding_similarity.png", "ablation.png"):
        assert (rep / name).stat().st_size > 1000, name
    assert html.count("data:image/png;base64,") >= 4  # self-contained
    t = pd.read_csv(rep / "transitions.csv")
    assert {
        "mixture",
        "target_op",
        "p_star",
        "ci_low",
        "ci_high",
        "censored",
        "p50",
        "p50_ci_low",
        "p50_ci_high",
        "test_scored",
        "test_exist",
    } <= set(t.columns)
    assert (t.n_seeds == 3).all() and (t.test_scored > 0).all()
    assert set(t.mixture) == {"MAX", "MAX+MIN"}
    r = pd.read_csv(rep / "ratios.csv")
    assert {
        "target_op",
        "comparison",
        "baseline_mixture",
        "mixture",
        "ratio",
        "ci_low",
        "ci_high",
        "verdict",
        "p50_ratio",
        "p50_verdict",
    } <= set(r.columns)
    assert set(r.verdict) <= {"benefit", "harm", "no benefit", "inconclusive"}
    assert list(r.mixture) == ["MAX+MIN"] and list(r.baseline_mixture) == ["MAX"]
    ab = pd.read_csv(rep / "ablations.csv")
    assert set(ab.sublayer) == {"attn", "mlp"} and set(ab["mode"]) == {"zero", "mean"}
    assert "P* [95% CI]" in html and "P50 [95% CI]" in html and "Separation score" in html


def test_transfer_experiment_starts_from_pretrained_weights(tmp_path):
    exp = experiment_from_dict(
        {
            **TINY,
            "sweep": {
                "mixtures": ["MIN"],
                "widths": [8],
                "seeds": [0],
                "transfer": {"pretrain": "MAX", "pretrain_steps": 40},
            },
        }
    )
    s = run_sweep(exp, tmp_path / "t", LocalExecutor(1))
    assert s["failed"] == 0 and s["done"] == 3
    df = collect(tmp_path / "t")
    assert set(df.mixture) == {"MIN", "MAX>MIN", "MIN@100"}
    assert df.set_index("mixture").loc["MIN@100", "steps"] <= 100
    runs = list((tmp_path / "t" / "runs").iterdir())
    assert len(runs) == 4  # scratch, scratch with the pretraining steps added, pretraining, transferred
    write_report(tmp_path / "t", n_boot=10, n_perm=19)
    assert (tmp_path / "t" / "report" / "transfer.png").stat().st_size > 1000
    # in one cohort (the pretraining run first, as a cohort of its own): the same runs and results
    c = run_sweep(exp, tmp_path / "c", LocalExecutor(1), cohort_size=3)
    assert c["failed"] == 0 and c["done"] == 3 and len(c["notes"]) == 1
    assert c["notes"][0].startswith("width 8: cohort size 3:")
    dc = collect(tmp_path / "c")
    assert list(dc.run_id) == list(df.run_id) and (dc.steps == df.steps).all()
    assert (dc.accuracy - df.accuracy).abs().max() <= 0.02
    # two fine-tuning runs that share a pretraining run, in two cohorts of one process: it trains once
    from jointtask.fileio import read_jsonl
    from jointtask.sweep.experiment import plan
    from jointtask.sweep.worker import execute_groups

    two = {**exp.sweep.model_dump(), "mixtures": ["MIN", "MIN+MED"], "targets": ["MIN"]}
    ft = [r for r in plan(exp.model_copy(update={"sweep": type(exp.sweep).model_validate(two)})) if r.pretrain]
    assert len(ft) == 2 and ft[0].pretrain and ft[1].pretrain and ft[0].pretrain.run_id == ft[1].pretrain.run_id
    execute_groups([[ft[0].model_dump(mode="json")], [ft[1].model_dump(mode="json")]], str(tmp_path / "two"))
    steps = [r["step"] for r in read_jsonl(tmp_path / "two" / ft[0].pretrain.run_id / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_adaptive_search_runs_fewer_widths(tmp_path):
    exp = experiment_from_dict(
        {**TINY, "sweep": {**TINY["sweep"], "mixtures": ["MAX"], "widths": {"min": 2, "max": 32, "num": 9}}}
    )
    s = adaptive_sweep(exp, tmp_path / "a", LocalExecutor(2))
    assert s["failed"] == 0
    widths = set(collect(tmp_path / "a").width)
    assert {2, 32} <= widths and len(widths) <= 4 < len(exp.sweep.width_list())


def test_reproduce_writes_claim_verdicts(tmp_path):
    """The README's main job, shrunk: same preset and code path, tiny widths and budget."""
    from .conftest import run_cli

    r = run_cli(
        "reproduce",
        "quick",
        "--out",
        tmp_path / "q",
        "--workers",
        "2",
        "--set",
        "sweep.widths=[4, 8]",
        "--set",
        "sweep.seeds=[0]",
        "--set",
        "base.train.steps=60",
        "--set",
        "base.train.eval_every=30",
        "--set",
        "base.data.per_n=40",
        "--set",
        "base.data.eval_count=60",
        "--set",
        "base.data.eval_train_count=20",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "C2: " in r.stdout
    html = (tmp_path / "q" / "report" / "index.html").read_text()
    assert "<h2>Claims</h2>" in html and "ADD+MAX+MED lowers" in html
    # 1 seed x 2 widths cannot decide anything: the claim says so instead of a verdict
    assert "C1: not decided" in r.stdout and "C2: not decided" in r.stdout
    claims = pd.read_csv(tmp_path / "q" / "report" / "claims.csv")
    assert list(claims.claim) == ["C1", "C2"] and claims.verdict.str.startswith("not decided").all()
    bad = run_cli("reproduce", "nosuch", "--out", tmp_path / "n")
    assert bad.returncode == 2 and "unknown preset 'nosuch'" in bad.stderr


TINY_SUITE = [
    "--set", "sweep.widths=[4]", "--set", "sweep.seeds=[0]",
    "--set", "base.train.steps=40",
    "--set", "base.train.eval_every=20", "--set", "base.train.checkpoint_every=20",
    "--set", "base.data.per_n=40", "--set", "base.data.eval_count=60", "--set", "base.data.eval_train_count=20",
]  # fmt: skip


def test_reproduce_cpu_runs_its_experiments_sharing_runs_and_resumes(tmp_path):
    """`reproduce cpu`, shrunk: every experiment of the suite in its own directory, a run that two
    experiments plan trained once, the time estimated up front, the claims table of all of them,
    and a second invocation that trains nothing."""
    from jointtask.reproduce import load_preset
    from jointtask.sweep.estimate import planned_runs
    from jointtask.sweep.experiment import plan

    from .conftest import run_cli

    # three of its experiments: C2 and the transfer (its pretraining runs) share ADD alone; the strict row
    presets = Path(str(resources.files("jointtask") / "presets"))
    chosen = tmp_path / "cpu.toml"
    chosen.write_text(
        "suite = ["
        + ", ".join(f'"{presets / "cpu" / f}"' for f in ("c2.toml", "transfer.toml", "strict-c2.toml"))
        + "]\n"
    )
    exps, suite = load_preset(str(chosen), TINY_SUITE[1::2])
    assert suite and {e.name for e in exps} <= {e.name for e in load_preset("cpu")[0]}
    distinct = {r.run_id for e in exps for r in planned_runs(plan(e))}  # pretraining runs included
    pretraining = {r.pretrain.run_id for e in exps for r in plan(e) if r.pretrain}  # trained with their transfer run
    out = tmp_path / "cpu"
    r = run_cli("reproduce", chosen, "--out", out, "--workers", "2", *TINY_SUITE)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{chosen}: {len(distinct)} runs to train on 2 worker(s); at most about" in r.stderr
    trained = 0
    for e in exps:
        log = [json.loads(line) for line in (out / e.name / "sweep_log.jsonl").read_text().splitlines()]
        trained += sum(row["trained"] for row in log)
        assert (out / e.name / "report" / "index.html").is_file()
    assert trained == len(distinct - pretraining) < sum(len(plan(e)) for e in exps)  # shared runs trained once
    assert "finished runs taken from" in r.stderr
    claims = pd.read_csv(out / "report" / "claims.csv")
    assert set(claims.source) == {e.name for e in exps} and set(claims.protocol) == {"paper", "strict"}
    assert claims.verdict.str.startswith("not decided").all()  # 1 seed x 1 width decides nothing
    took = json.loads((out / "report" / "reproduce.json").read_text())
    assert took["runs_trained"] == trained and took["sweep_invocations"] == len(exps)
    again = run_cli("reproduce", chosen, "--out", out, "--workers", "2", *TINY_SUITE)
    assert again.returncode == 0 and "runs to train" not in again.stderr
    assert again.stderr.count(": 0 trained, ") == len(exps)
