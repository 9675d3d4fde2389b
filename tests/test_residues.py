"""Residue accuracy: planted partial solutions are read as such, and a trained run's accuracy
modulo n is the test accuracy its training recorded."""

import numpy as np
import pandas as pd
import pytest

from jointtask.analysis.residues import known_modulus, moduli_of, residue_accuracy, residue_summary
from jointtask.report import write_report
from jointtask.sweep.executors import LocalExecutor
from jointtask.sweep.experiment import experiment_from_dict
from jointtask.sweep.results import collect
from jointtask.sweep.runner import run_sweep

from .conftest import run_cli


def test_moduli_are_the_divisors_above_one():
    assert moduli_of(20) == [2, 4, 5, 10, 20]
    assert moduli_of(43) == [43]


def test_planted_partial_solutions():
    truth = np.random.default_rng(0).integers(0, 20, 500)
    # right modulo 10, wrong by 10 on every prompt: knows the sum mod 10 (and mod 5, mod 2), not mod 4 or 20
    acc = residue_accuracy((truth + 10) % 20, truth, 20)
    assert acc == {2: 1.0, 4: 0.0, 5: 1.0, 10: 1.0, 20: 0.0}
    assert known_modulus(acc) == 10
    # off by a multiple of 4 (never 0): right mod 4 only
    off = np.random.default_rng(1).choice([4, 8, 12, 16], len(truth))
    acc = residue_accuracy((truth + off) % 20, truth, 20)
    assert acc[4] == 1.0 and acc[2] == 1.0 and acc[5] == 0.0 and acc[20] == 0.0
    assert known_modulus(acc) == 4
    # half the prompts unanswered, the rest right: 0.5 at every divisor, nothing known
    pred = np.where(np.arange(len(truth)) % 2 == 0, truth, -1)
    assert set(residue_accuracy(pred, truth, 20).values()) == {0.5}
    assert known_modulus(residue_accuracy(pred, truth, 20)) is None


@pytest.mark.slow
def test_residues_of_trained_runs_agree_with_their_records(tmp_path):
    exp = experiment_from_dict(
        {
            "name": "res",
            "sweep": {"mixtures": ["ADD", "ADD+MAX"], "targets": ["ADD"], "widths": [16], "seeds": [0, 1]},
            "base": {
                "task": {"modulus": 6, "max_depth": 1},
                "data": {"per_n": 60, "eval_count": 40, "eval_train_count": 20},
                "train": {"steps": 150, "batch_size": 32, "lr": 3e-3, "eval_every": 50, "checkpoint_every": 50},
            },
        }
    )
    out = tmp_path / "sweep"
    assert run_sweep(exp, out, LocalExecutor(2))["failed"] == 0
    r = run_cli("residues", out)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out / "residues.csv")
    assert len(table) == 4 and set(table.target_op) == {"ADD"}
    recorded = collect(out).set_index(["run_id", "target_op"]).accuracy
    for row in table.itertuples():
        # the answer right modulo n is the answer right: the training loop's own test accuracy
        assert row.mod_6 == pytest.approx(recorded[(row.run_id, "ADD")])
        assert row.mod_2 >= row.mod_6 and row.mod_3 >= row.mod_6
    assert "ADD+MAX (ADD)" in r.stdout and "mod 3 only" in r.stdout
    summary = residue_summary(table)
    assert list(summary.curve) == ["ADD", "ADD+MAX (ADD)"] and (summary.runs == 2).all()
    assert (summary[["mod 6", "mod 3 only", "mod 2 only", "nothing"]].sum(axis=1) == summary.runs).all()
    html, _ = write_report(out, n_boot=10, n_perm=9)
    assert "What failed runs learned" in html.read_text() and "4 of the 4 finished runs" in html.read_text()


def test_residues_refuse_a_directory_that_is_no_sweep(tmp_path):
    r = run_cli("residues", tmp_path)
    assert r.returncode == 2 and "not a sweep directory" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "residues.csv").exists()


@pytest.mark.slow
def test_residues_refuse_an_unknown_split_before_reading_a_run(tmp_path):
    (tmp_path / "plan.json").write_text("[]")
    r = run_cli("residues", tmp_path, "--split", "train")
    assert r.returncode == 2 and "split must be one of test, validation" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "residues.csv").exists()
