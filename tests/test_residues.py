"""Residue accuracy: planted partial solutions are read as such, and a trained run's accuracy
modulo n is the test accuracy its training recorded."""

import numpy as np
import pandas as pd
import pytest

from jointtask.analysis.embeddings import factor_shares, frequency_power, prime_power_factors
from jointtask.analysis.residues import (
    embedding_summary,
    known_modulus,
    moduli_of,
    residue_accuracy,
    residue_summary,
)
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


def test_planted_embeddings_are_read_by_their_frequencies():
    """Values on a circle at frequency k (rotated into 12 dimensions, with a common offset): all
    their power at k, which tells a value modulo 4 when k is odd and modulo 5 when 5 does not
    divide k; two circles (k = 4 and 5: the residues mod 5 and mod 4, the Chinese remainder
    theorem's) split the power and tell both."""
    assert prime_power_factors(20) == [(2, 4), (5, 5)] and prime_power_factors(43) == [(43, 43)]
    assert prime_power_factors(72) == [(2, 8), (3, 9)]
    rng = np.random.default_rng(0)
    v = np.arange(20)
    rotate = np.linalg.qr(rng.normal(size=(12, 12)))[0][:2]  # [2, 12], orthonormal rows

    def circle(k):
        return np.stack([np.cos(2 * np.pi * k * v / 20), np.sin(2 * np.pi * k * v / 20)], 1) @ rotate + 3.0

    for k in range(1, 11):
        power = frequency_power(circle(k))
        assert power.shape == (10,) and int(np.argmax(power)) + 1 == k and power[k - 1] == pytest.approx(1.0)
        want = {4: float(k % 2 == 1), 5: float(k % 5 != 0)}
        assert factor_shares(power, 20) == pytest.approx(want, abs=1e-9)
    crt = factor_shares(frequency_power(np.concatenate([circle(4), 0.5 * circle(5)], axis=1)), 20)
    assert crt == pytest.approx({4: 0.25 / 1.25, 5: 1 / 1.25})
    # nothing at odd frequencies: x and x + 10 share a row (the embedding of the mod-10 solution)
    assert np.allclose(circle(2)[:10], circle(2)[10:])
    assert not frequency_power(np.ones((20, 4))).any()  # no variation: no power anywhere


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
    assert table.embedding_frequency.between(1, 3).all()
    assert table.embedding_mod_2.between(0, 1).all() and table.embedding_mod_3.between(0, 1).all()
    frequencies = embedding_summary(table)
    assert frequencies.runs.sum() == 4 and set(frequencies.knows) <= {"mod 6", "mod 3 only", "mod 2 only", "nothing"}
    assert {"power telling mod 2", "power telling mod 3"} <= set(frequencies.columns)
    summary = residue_summary(table)
    assert list(summary.curve) == ["ADD", "ADD+MAX (ADD)"] and (summary.runs == 2).all()
    assert (summary[["mod 6", "mod 3 only", "mod 2 only", "nothing"]].sum(axis=1) == summary.runs).all()
    html, _ = write_report(out, n_boot=10, n_perm=9)
    assert "What failed runs learned" in html.read_text() and "4 of the 4 finished runs" in html.read_text()

    # a run whose checkpoint is gone keeps its row from the earlier table, read before the
    # embeddings were (no embedding columns), and drops out of the embedding summary only
    gone = table.run_id[0]
    (out / "runs" / gone / "checkpoint.pt").unlink()
    earlier = table.drop(columns=[c for c in table.columns if c.startswith("embedding_")])
    earlier.to_csv(out / "residues.csv", index=False)
    r = run_cli("residues", out)
    assert r.returncode == 0, r.stderr
    again = pd.read_csv(out / "residues.csv")
    assert list(again.run_id) == list(table.run_id) and np.allclose(again.mod_6, table.mod_6)
    assert again.embedding_mod_2.isna().tolist() == [True, False, False, False]
    assert embedding_summary(again).runs.sum() == 3
    # a kept row that disagrees with its run's record is refused, and nothing is written
    earlier.loc[0, "accuracy"] = 1.5
    earlier.to_csv(out / "residues.csv", index=False)
    before = (out / "residues.csv").read_text()
    r = run_cli("residues", out)
    assert r.returncode == 2 and f"run {gone}" in r.stderr and "Traceback" not in r.stderr
    assert (out / "residues.csv").read_text() == before


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
