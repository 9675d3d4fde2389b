"""Planted curves and planted structure: the analyses must recover what was put in."""

import numpy as np
import pytest

from jointtask.analysis.embeddings import embedding_structure, separation
from jointtask.analysis.transition import fit_curve, fit_transition, joint_benefit, logistic
from jointtask.tasks import TaskConfig

from .conftest import run_cli

WIDTH_PARAMS = np.geomspace(1e3, 1e6, 9)


def planted(p_star, seeds=5, noise=0.04, rng=None, lo=0.1, hi=0.95, w=0.35):
    """Points from a logistic whose 80%-of-hi crossing is p_star."""
    rng = rng or np.random.default_rng(0)
    q = (0.8 * hi - lo) / (hi - lo)
    logp0 = np.log(p_star) - w * np.log(q / (1 - q))
    P, A, S = [], [], []
    for s in range(seeds):
        for p in WIDTH_PARAMS:
            P.append(p)
            A.append(np.clip(logistic(np.log(p), lo, hi, logp0, w) + rng.normal(0, noise), 0, 1))
            S.append(s)
    return np.array(P), np.array(A), np.array(S)


@pytest.mark.parametrize("truth", [5e3, 3e4, 2e5])
def test_planted_transition_recovered_within_10_percent(truth):
    P, A, S = planted(truth, rng=np.random.default_rng(int(truth)))
    t = fit_transition(P, A, S, n_boot=100)
    assert t.fit.censored == "none"
    assert abs(t.fit.p_star / truth - 1) < 0.10
    assert t.ci_low <= t.fit.p_star <= t.ci_high


def test_flat_curves_are_censored():
    P = np.repeat(WIDTH_PARAMS, 3)
    rng = np.random.default_rng(1)
    low = fit_curve(P, 0.1 + rng.normal(0, 0.02, len(P)))
    high = fit_curve(P, np.clip(0.97 + rng.normal(0, 0.02, len(P)), 0, 1))
    assert low.censored == "above" and low.p_star is None
    assert high.censored == "below" and high.p_star is None


def test_transition_beyond_the_range_is_censored_above():
    P, A, S = planted(5e7, seeds=3)  # the rise starts past the largest size
    assert fit_transition(P, A, S, n_boot=20).fit.censored == "above"


def test_interval_covers_the_truth_in_most_replicates():
    truth, covered = 3e4, 0
    for rep in range(50):
        P, A, S = planted(truth, seeds=5, noise=0.05, rng=np.random.default_rng(100 + rep))
        t = fit_transition(P, A, S, n_boot=80, seed=rep)
        covered += t.ci_low is not None and t.ci_high is not None and t.ci_low <= truth <= t.ci_high
    assert covered >= 35  # most of 50 (a 95% interval; the seed bootstrap is known to run narrow)


def test_joint_benefit_ratio_and_bounds():
    a = fit_transition(*planted(1e5, rng=np.random.default_rng(3)), n_boot=100)
    j = fit_transition(*planted(2.5e4, rng=np.random.default_rng(4)), n_boot=100, seed=1)
    r = joint_benefit(a, j)
    assert r["kind"] == "value" and 3.2 < r["ratio"] < 4.8 and r["verdict"] == "benefit"
    same = joint_benefit(a, fit_transition(*planted(1e5, rng=np.random.default_rng(5)), n_boot=100, seed=2))
    assert same["verdict"] == "no benefit"
    never = fit_transition(*planted(5e8, seeds=3), n_boot=30)
    bound = joint_benefit(never, j)
    assert bound["kind"] == "lower" and bound["ratio"] == pytest.approx(WIDTH_PARAMS[-1] / j.fit.p_star)


def test_ratio_interval_of_two_equal_transitions_mostly_contains_one():
    # three seeds a side, as in the CPU sweeps: the interval must not call noise a benefit
    hits = 0
    for rep in range(20):
        a = fit_transition(*planted(3e4, seeds=3, noise=0.05, rng=np.random.default_rng(200 + rep)), n_boot=60)
        j = fit_transition(*planted(3e4, seeds=3, noise=0.05, rng=np.random.default_rng(300 + rep)), n_boot=60)
        hits += joint_benefit(a, j)["verdict"] == "no benefit"
    assert hits >= 17


def test_transition_cli(tmp_path):
    P, A, S = planted(3e4)
    f = tmp_path / "points.csv"
    f.write_text("params,accuracy,seed\n" + "".join(f"{p},{a},{s}\n" for p, a, s in zip(P, A, S)))
    r = run_cli("transition", f)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["censored"] == "none" and abs(out["p_star"] / 3e4 - 1) < 0.1
    assert out["ci_low"] < out["p_star"] < out["ci_high"]
    bad = tmp_path / "bad.csv"
    bad.write_text("params,acc\n1,2\n")
    r = run_cli("transition", bad)
    assert r.returncode == 2 and "accuracy" in r.stderr


def test_ratios_cli_from_a_results_table(tmp_path):
    import io

    import pandas as pd

    rows = []
    for mixture, truth, rng in (("ADD", 1e5, 3), ("ADD+MAX", 2e4, 4)):
        P, A, S = planted(truth, rng=np.random.default_rng(rng))
        rows += [{"mixture": mixture, "target_op": "ADD", "params": p, "accuracy": a, "seed": s, "width": int(p)}
                 for p, a, s in zip(P, A, S)]
    f = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    r = run_cli("ratios", f, "--n-boot", "60")
    assert r.returncode == 0, r.stderr
    trans, ratios = (pd.read_csv(io.StringIO(t)) for t in r.stdout.strip().split("\n\n"))
    assert sorted(trans.mixture) == ["ADD", "ADD+MAX"]
    row = ratios.iloc[0]
    assert row.mixture == "ADD+MAX" and 4 < row.ratio < 6.5 and row.verdict == "benefit"
    pd.DataFrame(rows).drop(columns="seed").to_csv(f, index=False)
    r = run_cli("ratios", f)
    assert r.returncode == 2 and "seed" in r.stderr and "Traceback" not in r.stderr


def test_planted_parity_clusters_are_found():
    rng = np.random.default_rng(0)
    n, d = 20, 32
    centres = rng.normal(0, 1, (2, d))
    emb = centres[np.arange(n) % 2] + rng.normal(0, 0.3, (n, d))
    fam = TaskConfig(ops=["ADD"], modulus=n).family()
    s = embedding_structure(emb, fam)
    assert s["separation"]["parity"]["score"] > 0.5 and s["separation"]["parity"]["p_value"] < 0.01
    rand = embedding_structure(rng.normal(0, 1, (n, d)), fam)
    assert rand["separation"]["parity"]["p_value"] > 0.01
    assert abs(rand["separation"]["parity"]["score"]) < 0.3


def test_planted_ordering_is_found():
    n = 15
    t = np.linspace(0, np.pi, n)
    emb = np.stack([np.cos(t), np.sin(t), 0.05 * np.random.default_rng(0).normal(size=n)], 1)
    fam = TaskConfig(ops=["ADD"], modulus=n).family()
    assert embedding_structure(emb, fam)["ordering"] > 0.9


def test_separation_null_is_centred():
    rng = np.random.default_rng(2)
    coords = rng.normal(size=(30, 3))
    s = separation(coords, np.arange(30) % 3, n_perm=200)
    assert abs(s["null_mean"]) < 0.1


def test_compatibility_score_sees_shared_parity_and_divisors():
    from jointtask.analysis.compatibility import compatibility

    nadd = compatibility("ADD", ["NADD"], modulus=10)
    assert nadd["companions"]["NADD"]["mod2_nmi"] > 0.99  # a+b and a-b always share their parity
    composite = compatibility("ADD", ["PROD"], modulus=20)["score"]
    prime = compatibility("ADD", ["PROD"], modulus=43)["score"]
    assert composite > 5 * prime


def test_permutation_embeddings_use_sign_and_cosets():
    fam = TaskConfig(ops=["PMUL"], degree=4).family()
    rng = np.random.default_rng(0)
    signs = np.array([fam.parity(i) for i in range(24)])
    emb = rng.normal(0, 1, (2, 16))[signs] + rng.normal(0, 0.2, (24, 16))
    s = embedding_structure(emb, fam, n_perm=199)
    assert set(s["separation"]) == {"sign", "coset"}
    assert s["separation"]["sign"]["p_value"] < 0.01 and s["separation"]["coset"]["p_value"] > 0.01
