"""Planted curves and planted structure: the analyses must recover what was put in."""

import numpy as np
import pytest

from jointtask.analysis.embeddings import embedding_structure, separation
from jointtask.analysis.calibration import calibrate, design_of, design_sizes, planted_pstar, simulate
from jointtask.analysis.transition import (
    DesignError,
    Estimate,
    Transition,
    fit_transition,
    joint_benefit,
    logistic,
    verdict,
)
from jointtask.tasks import TaskConfig

from .conftest import ROOT, run_cli

WIDE_DESIGN = ROOT / "experiments" / "strict" / "quick.toml"  # the wide design: 6 widths 1.5x apart, 8 seeds

WIDTH_PARAMS = np.geomspace(1e3, 1e6, 9)


def planted(p_star, seeds=5, noise=0.04, rng=None, lo=0.1, hi=0.95, w=0.35, sizes=WIDTH_PARAMS):
    """Points from a logistic whose 80%-of-hi crossing is p_star."""
    rng = rng or np.random.default_rng(0)
    q = (0.8 * hi - lo) / (hi - lo)
    logp0 = np.log(p_star) - w * np.log(q / (1 - q))
    P, A, S = [], [], []
    for s in range(seeds):
        for p in sizes:
            P.append(p)
            A.append(np.clip(logistic(np.log(p), lo, hi, logp0, w) + rng.normal(0, noise), 0, 1))
            S.append(s)
    return np.array(P), np.array(A), np.array(S)


@pytest.mark.parametrize("truth", [5e3, 3e4, 2e5])
def test_planted_transition_recovered_within_10_percent(truth):
    P, A, S = planted(truth, rng=np.random.default_rng(int(truth)))
    t = fit_transition(P, A, S, n_boot=100)
    assert t.pstar.censored == "none"
    assert abs(t.pstar.value / truth - 1) < 0.10
    assert t.pstar_ci[0] <= t.pstar.value <= t.pstar_ci[1]


def test_flat_curves_are_censored():
    P = np.repeat(WIDTH_PARAMS, 3)
    S = np.tile([0, 1, 2], len(WIDTH_PARAMS))
    rng = np.random.default_rng(1)
    low = fit_transition(P, np.clip(0.1 + rng.normal(0, 0.02, len(P)), 0, 1), S, n_boot=20)
    high = fit_transition(P, np.clip(0.97 + rng.normal(0, 0.02, len(P)), 0, 1), S, n_boot=20)
    assert low.pstar.censored == "above" and low.pstar.value is None and low.p50.censored == "above"
    assert high.pstar.censored == "below" and high.pstar.value is None and high.p50.censored == "below"


def test_transition_beyond_the_range_is_censored_above():
    P, A, S = planted(5e7, seeds=3)  # the rise starts past the largest size
    assert fit_transition(P, A, S, n_boot=20).pstar.censored == "above"


def test_fit_does_not_depend_on_row_order_and_is_deterministic():
    P, A, S = planted(3e4, seeds=4, noise=0.08, rng=np.random.default_rng(7))
    ref = fit_transition(P, A, S, n_boot=50).to_dict()
    for k in range(3):
        perm = np.random.default_rng(k).permutation(len(P))
        assert fit_transition(P[perm], A[perm], S[perm], n_boot=50).to_dict() == ref


def test_too_few_widths_or_seeds_are_refused():
    P, A, S = planted(3e4, seeds=2)
    with pytest.raises(DesignError, match="3 seeds"):
        fit_transition(P, A, S)
    P, A, S = planted(3e4, seeds=4, sizes=WIDTH_PARAMS[:2])
    with pytest.raises(DesignError, match="3 widths"):
        fit_transition(P, A, S)


def test_step_between_two_sizes_gets_an_interval_spanning_them():
    sizes = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    P = np.tile(sizes, 8)
    S = np.repeat(np.arange(8), len(sizes))
    A = np.where(P >= 1e4, 0.98, 0.15)  # every seed learns between 3e3 and 1e4, no run in between
    t = fit_transition(P, A, S, n_boot=200)
    assert 3e3 <= t.pstar.value <= 1e4 and 3e3 <= t.p50.value <= 1e4
    for lo, hi in (t.pstar_ci, t.p50_ci):
        assert lo <= 3e3 and hi >= 1e4  # not narrower than the gap the data leave open


def test_joint_benefit_ratio_and_bounds():
    a = fit_transition(*planted(1e5, rng=np.random.default_rng(3)), n_boot=100)
    j = fit_transition(*planted(2.5e4, rng=np.random.default_rng(4)), n_boot=100, seed=1)
    r = joint_benefit(a, j)
    assert r["kind"] == "value" and 3.2 < r["ratio"] < 4.8 and r["verdict"] == "benefit"
    same = joint_benefit(a, fit_transition(*planted(1e5, rng=np.random.default_rng(5)), n_boot=100, seed=2))
    assert same["verdict"] in ("no benefit", "inconclusive")
    never = fit_transition(*planted(5e8, seeds=3), n_boot=30)
    bound = joint_benefit(never, j)
    assert bound["kind"] == "lower" and bound["ratio"] == pytest.approx(WIDTH_PARAMS[-1] / j.pstar.value)


def _curve(boot_log_pstar: np.ndarray, sizes=(1e3, 2e4)) -> Transition:
    """A fitted curve reduced to what a ratio reads: its estimate and its bootstrap replicates."""
    est = Estimate(None, "above", *sizes)
    return Transition(est, est, (None, None), (None, None), np.array(sizes), 40, 8, boot_log_pstar, boot_log_pstar)


def test_replicates_censored_on_both_sides_widen_a_ratio_interval_instead_of_dropping_out():
    """Alone: learned at 10k in 80% of replicates, censored above in 20%; joint: censored above
    in 90%. Dropping the pairs where both are censored left an upper end near 1 (a 'harm' that
    came and went with the replicate count); each such pair can be any ratio, so the upper end is open."""
    n = 1000
    alone = _curve(np.where(np.arange(n) < 0.8 * n, np.log(1e4), np.inf))
    joint = _curve(np.where(np.arange(n) < 0.1 * n, np.log(1e4), np.inf))
    r = joint_benefit(alone, joint)
    assert r["ci_high"] is None and r["verdict"] == "inconclusive"
    # a censored replicate is a bound, not nothing: alone always censored above (> 20k), joint
    # always at 5k, so every replicate says the ratio exceeds 4
    r = joint_benefit(_curve(np.full(n, np.inf)), _curve(np.full(n, np.log(5e3))))
    assert r["ci_low"] == pytest.approx(4.0) and r["ci_high"] is None and r["verdict"] == "benefit"


@pytest.mark.parametrize(
    "lo,hi,word",
    [
        (1.2, 3.0, "benefit"),
        (0.2, 0.9, "harm"),
        (0.7, 1.6, "no benefit"),
        (0.8, 2.5, "inconclusive"),
        (None, 1.5, "inconclusive"),
        (0.3, 1.1, "inconclusive"),
        (1.01, None, "benefit"),
    ],
)
def test_verdict_words(lo, hi, word):
    assert verdict(lo, hi) == word


@pytest.mark.slow
def test_intervals_are_calibrated_at_the_wide_design():
    """Planted sweeps like real ones, at the widths and seeds of the wide design (the strict C2
    sweep at mod 10: 6 widths 1.5x apart, 8 seeds, bimodal seeds): the 95% intervals of P* and P50 cover the planted values in at
    least 90% of replicates, and an A/A pair (the same planted transition twice) is called benefit
    or harm in at most 5%."""
    import pandas as pd

    sizes, seeds = design_of(WIDE_DESIGN)
    trained = pd.read_csv(ROOT / "docs" / "results" / "strict-quick" / "results.csv").query("mixture == 'ADD'")
    assert sizes == sorted(trained.params.unique()) and seeds == trained.seed.nunique() == 8  # the runs' own sizes
    (res,) = calibrate(reps=40, n_boot=150, sizes=sizes, seeds=seeds, seed=11)
    assert res["pstar_covered"] >= 0.90 and res["p50_covered"] >= 0.90, res
    assert res["benefit"] + res["harm"] <= 0.05 and res["p50_benefit"] + res["p50_harm"] <= 0.05, res


@pytest.mark.slow
def test_a_planted_fivefold_benefit_is_found_at_the_wide_design():
    # the success view has the power; the accuracy view (P*) is noisier with bimodal seeds
    sizes, seeds = design_of(WIDE_DESIGN)
    (res,) = calibrate(reps=20, n_boot=150, sizes=sizes, seeds=seeds, ratios=(5.0,), seed=12)
    assert res["p50_benefit"] >= 0.7 and res["benefit"] >= 0.3 and res["harm"] == res["p50_harm"] == 0, res
    assert res["no_benefit"] == res["p50_no_benefit"] == 0, res  # a fivefold effect is never called null


@pytest.mark.slow
def test_transition_cli_on_a_planted_sweep_covers_the_planted_sizes(tmp_path):
    """48 planted points (8 seeds x 6 widths, seeds bimodal around P50 = 10k): the command's
    intervals hold the planted P50 and P*, and the fit reads every point and seed."""
    import json

    rng = np.random.default_rng(0)
    P, A, S = simulate(1e4, rng, design_sizes())
    f = tmp_path / "points.csv"
    f.write_text("params,accuracy,seed\n" + "".join(f"{p},{a},{s}\n" for p, a, s in zip(P, A, S)))
    r = run_cli("transition", f)
    assert r.returncode == 0, r.stderr
    fit = json.loads(r.stdout)
    assert fit["n_points"] == len(P) == 48 and fit["n_seeds"] == 8 and fit["censored"] == "none"
    assert fit["p50_ci_low"] <= 1e4 <= fit["p50_ci_high"]
    assert fit["ci_low"] <= planted_pstar(1e4) <= fit["ci_high"]


@pytest.mark.slow
def test_transition_cli(tmp_path):
    P, A, S = planted(3e4)
    f = tmp_path / "points.csv"
    f.write_text("params,accuracy,seed\n" + "".join(f"{p},{a},{s}\n" for p, a, s in zip(P, A, S)))
    r = run_cli("transition", f)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["censored"] == "none" and abs(out["p_star"] / 3e4 - 1) < 0.12
    assert out["ci_low"] < out["p_star"] < out["ci_high"] and out["p50_censored"] in ("none", "below", "above")
    bad = tmp_path / "bad.csv"
    bad.write_text("params,acc\n1,2\n")
    r = run_cli("transition", bad)
    assert r.returncode == 2 and "accuracy" in r.stderr
    few = tmp_path / "few.csv"
    few.write_text("params,accuracy,seed\n" + "".join(f"{p},{a},{s}\n" for p, a, s in zip(P, A, S) if s < 2))
    r = run_cli("transition", few)
    assert r.returncode == 2 and "3 seeds" in r.stderr and "Traceback" not in r.stderr
    nan = tmp_path / "nan.csv"
    nan.write_text(
        "params,accuracy,seed\n"
        + "".join(f"{p},{'nan' if i == 3 else a},{s}\n" for i, (p, a, s) in enumerate(zip(P, A, S)))
    )
    r = run_cli("transition", nan)
    assert r.returncode == 2 and "accurac" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ratios_cli_from_a_results_table(tmp_path):
    import io

    import pandas as pd

    rows = []
    for mixture, truth, rng in (("ADD", 1e5, 3), ("ADD+MAX", 2e4, 4)):
        P, A, S = planted(truth, rng=np.random.default_rng(rng))
        rows += [
            {"mixture": mixture, "target_op": "ADD", "params": p, "accuracy": a, "seed": s, "width": int(p)}
            for p, a, s in zip(P, A, S)
        ]
    f = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    r = run_cli("ratios", f, "--n-boot", "60")
    assert r.returncode == 0, r.stderr
    trans, ratios = (pd.read_csv(io.StringIO(t)) for t in r.stdout.strip().split("\n\n"))
    assert sorted(trans.mixture) == ["ADD", "ADD+MAX"]
    row = ratios.iloc[0]
    assert row.mixture == "ADD+MAX" and 4 < row.ratio < 6.5 and row.verdict == "benefit"
    r = run_cli("ratios", f, "--n-boot", "60", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "ratios.csv").equals(ratios)
    assert pd.read_csv(tmp_path / "transitions.csv").equals(trans)
    r = run_cli("ratios", f, "--out", tmp_path / "missing")
    assert r.returncode == 2 and "not a directory" in r.stderr and "Traceback" not in r.stderr
    pd.DataFrame(rows).drop(columns="seed").to_csv(f, index=False)
    r = run_cli("ratios", f)
    assert r.returncode == 2 and "seed" in r.stderr and "Traceback" not in r.stderr


def test_isomorphic_single_ops_are_an_a_a_check_and_equal_steps_controls_are_compared():
    from jointtask.analysis.tables import comparisons

    c = comparisons(["ADD", "SADD", "ADD+MAX+MED", "ADD@9000"], {"ADD+MAX+MED": 9000, "ADD": 3000})
    assert ("joint", "ADD", "ADD", "ADD+MAX+MED") in c
    assert ("joint, equal steps", "ADD", "ADD@9000", "ADD+MAX+MED") in c
    assert ("A/A (isomorphic)", "ADD", "ADD", "SADD") in c
    # a transfer against its target from scratch, for the same steps and for the pretraining added
    c = comparisons(["ADD", "ADD@4500", "MAX+MED>ADD"], {"ADD": 3000, "ADD@4500": 4500, "MAX+MED>ADD": 3000})
    assert sorted(c) == [
        ("transfer", "ADD", "ADD", "MAX+MED>ADD"),
        ("transfer, equal steps", "ADD", "ADD@4500", "MAX+MED>ADD"),
    ]


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


def test_bootstrap_replicates_of_seeds_with_missing_runs_are_padded_not_biased():
    """A seed that lacks a run gives shorter replicates; padding (-1) must add nothing to any size."""
    from jointtask.analysis.transition import _tables

    logp = np.log([1e3, 1e4, 1e5, 1e3, 1e4])  # seed 0 has three sizes, seed 1 lacks the largest
    acc = np.array([0.1, 0.5, 0.9, 0.2, 0.6])
    padded = np.array([[0, 1, 2, 3, 4, -1], [3, 4, -1, 3, 4, -1]])
    xs, n, sums = _tables(logp, acc, padded)
    assert n.tolist() == [[2, 2, 1], [2, 2, 0]]
    assert np.allclose(sums, [[0.3, 1.1, 0.9], [0.4, 1.2, 0.0]])
    P, A, S = simulate(1e4, np.random.default_rng(1), design_sizes(), 8)
    keep = np.ones(len(P), bool)
    keep[5] = False  # one run missing
    t = fit_transition(P[keep], A[keep], S[keep], n_boot=100)
    assert len(t.boot_pstar) == 100 and t.pstar_ci[0] is not None


def test_claims_are_rows_of_a_data_file(tmp_path):
    from jointtask.analysis.claims import CLAIMS, load_claims
    from jointtask.errors import UserError

    assert CLAIMS == load_claims() and {c.claim for c in CLAIMS} >= {"C1", "C2", "C9"}
    assert all(c.expects in ("benefit", "no benefit") for c in CLAIMS)
    bad = tmp_path / "claims.toml"
    bad.write_text('[[claim]]\nclaim = "C2"\npaper = "x"\nsource = "s"\nscale = "s"\ncommand = "c"\ncolour = "red"\n')
    with pytest.raises(UserError, match="cannot read the claims file"):
        load_claims(bad)
    bad.write_text("[[claim]\n")
    with pytest.raises(UserError, match="cannot read the claims file"):
        load_claims(bad)


def test_a_claim_without_records_has_a_row_only_when_asked():
    """`claims --missing` lists every claim, those whose source is not among the directories as
    not run; without it the table holds only the sources given. Rows keep the claims file's order."""
    import io

    import pandas as pd

    from jointtask.analysis.claims import CLAIMS, claims_table

    quick = ROOT / "docs" / "results" / "quick"
    given = pd.read_csv(io.StringIO(claims_table([quick], "csv", n_boot=50)))
    assert set(given.source) == {"quick"} and len(given) == sum(c.source == "quick" for c in CLAIMS)
    every = pd.read_csv(io.StringIO(claims_table([quick], "csv", n_boot=50, missing=True)), keep_default_na=False)
    assert list(zip(every.claim, every.source)) == [(c.claim, c.source) for c in CLAIMS]
    absent = every[every.source != "quick"]
    assert (absent["ours, 95% interval"] == "not run").all()
    assert absent.verdict.str.startswith("not decided (no records of ").all()
    assert every[every.source == "quick"].reset_index(drop=True).equals(given.reset_index(drop=True).astype(str))


def test_an_inconclusive_row_quotes_the_power_of_its_design():
    """The power note reads the calibration of the design family the widths' spacing gives (dense:
    about 1.2x apart; wide: 1.5x) at the curves' seeds, and the next design with more seeds."""
    import pandas as pd

    from jointtask.analysis.claims import power_note

    rows = [
        {"design": "dense", "seeds": 8, "ratio": 1.0, "p50_no_benefit": 0.3, "benefit": 0.0, "p50_benefit": 0.0},
        {"design": "dense", "seeds": 8, "ratio": 2.0, "benefit": 0.2, "p50_benefit": 0.7},
        {"design": "dense", "seeds": 8, "ratio": 3.0, "benefit": 0.6, "p50_benefit": 0.9},
        {"design": "dense-16", "seeds": 16, "ratio": 1.0, "p50_no_benefit": 0.75, "benefit": 0.0, "p50_benefit": 0.0},
        {"design": "dense-16", "seeds": 16, "ratio": 2.0, "benefit": 0.3, "p50_benefit": 0.92},
        {"design": "wide", "seeds": 8, "ratio": 2.0, "benefit": 0.1, "p50_benefit": 0.3},
    ]

    def table(widths, seeds):
        return pd.DataFrame(
            [
                {"mixture": m, "target_op": "ADD", "width": w, "seed": s}
                for m in ("ADD", "ADD+MAX")
                for w in widths
                for s in range(seeds)
            ]
        )

    curves = [("ADD", "ADD"), ("ADD+MAX", "ADD")]
    note = power_note(table([10, 12, 14, 17, 20], 8), curves, rows)
    assert "dense widths" in note and "8 seeds: 80% power from 3x (P50) / > 3x (P*)" in note
    assert "equal curves called no benefit 30%" in note and "with 16 seeds: 80% power from 2x (P50)" in note
    assert "wide widths" in power_note(table([8, 12, 18, 27, 40], 8), curves, rows)
    assert "at 16 seeds" in power_note(table([10, 12, 14], 20), curves, rows)  # the most seeds calibrated, at or below
    assert power_note(table([10, 12, 14], 8), [("ADD", "ADD"), ("ADD+MED", "ADD")], rows) == ""  # a curve not trained


def test_an_undecided_row_says_what_its_design_lacks():
    """A design below 8 seeds a width or 5 widths gives no verdict, and says which it lacks and by
    how much; the old split is named as a reason of its own."""
    import pandas as pd

    from jointtask.analysis.claims import design

    def table(widths, seeds, protocol="paper"):
        return pd.DataFrame(
            [
                {"mixture": m, "target_op": "ADD", "width": w, "seed": s, "protocol": protocol, "test_scored": 1}
                for m in ("ADD", "ADD+MAX")
                for w in widths
                for s in range(seeds if m == "ADD" or w > 10 else seeds - 1)
            ]
        )

    curves = [("ADD", "ADD"), ("ADD+MAX", "ADD")]
    assert design(table([10, 12, 14, 17, 20], 9), curves)[1] == ""
    text, why = design(table([10, 12, 14, 17, 20], 3), curves)
    assert "3x5 / 2-3x5" in text and why == "design too small: 2 seeds at a width of the 8 a verdict needs"
    why = design(table([12, 14, 17], 8), curves)[1]
    assert why == "design too small: 3 widths of the 5 a verdict needs"
    assert design(table([10, 12, 14, 17, 20], 2), curves)[1].startswith("design too small: 1 seed at a width")
    old = table([10, 12, 14, 17, 20], 9).drop(columns=["protocol", "test_scored"])
    assert design(old, curves)[1] == "old split"


def test_a_lottery_curve_is_flagged_and_a_step_is_not():
    """Planted curves: success drawn at the same rate at every size (a lottery) is flagged in the
    claims row; a step (runs succeed above a size) and a curve that always succeeds are not."""
    import pandas as pd

    from jointtask.analysis.claims import flat_note
    from jointtask.analysis.tables import rise_p

    rng = np.random.default_rng(3)
    sizes = np.geomspace(1e3, 3e4, 10)

    def curve(mixture, success):
        return pd.DataFrame(
            [
                {
                    "mixture": mixture,
                    "target_op": "ADD",
                    "params": p,
                    "seed": s,
                    "accuracy": 0.97 if success(i) else 0.3,
                }
                for i, p in enumerate(sizes)
                for s in range(16)
            ]
        )

    lottery = curve("ADD", lambda i: rng.random() < 0.6)
    step = curve("ADD+MAX", lambda i: i >= 4 or rng.random() < 0.1)
    assert rise_p(lottery) > 0.05 and rise_p(step) < 1e-6
    assert rise_p(curve("ADD", lambda i: True)) is None
    df = pd.concat([lottery, step])
    note = flat_note(df, [("ADD", "ADD"), ("ADD+MAX", "ADD")])
    assert note.startswith("; ADD alone: success does not rise with size (p = ") and "ADD+MAX" not in note


def _hovering(p_learn: float, rng_seed: int, seeds: int = 12):
    """Planted: every seed of ADD alone learns (0.97) or not (0.3) with chance `p_learn` at every
    size; the mixture's seeds all learn from the fifth of eight sizes on (a clean step)."""
    import pandas as pd

    rng = np.random.default_rng(rng_seed)
    sizes = np.geomspace(1e3, 3e4, 8)
    rows = []
    for s in range(seeds):
        for i, p in enumerate(sizes):
            ok = rng.random() < p_learn
            common = {"target_op": "ADD", "params": p, "width": i, "seed": s}
            rows.append({**common, "mixture": "ADD", "accuracy": 0.97 if ok else 0.3})
            rows.append({**common, "mixture": "ADD+MAX", "accuracy": 0.97 if i >= 4 else 0.1})
    return pd.DataFrame(rows)


def test_a_curve_hovering_at_the_learned_level_is_flagged_and_more_seeds_projected():
    """A mean accuracy at the learned level (0.75 x 0.97 + 0.25 x 0.3 = 0.80) at every size: the
    bootstrap replicates fall on both censored sides, and four times the seeds would not move
    them off it; a mean of 0.72 (learned with chance 0.62) is flagged at 12 seeds but placed by
    four times as many; a clean step is never flagged."""
    from jointtask.analysis.claims import split_note
    from jointtask.analysis.tables import transitions

    at = _hovering(0.75, 5)
    _, fits = transitions(at, n_boot=300)
    note = split_note(at, fits, [("ADD", "ADD"), ("ADD+MAX", "ADD")])
    assert note.startswith("; ADD alone: ") and "never reach P*" in note and "ADD+MAX" not in note
    assert "more seeds do not place it" in note
    assert split_note(at, fits, [("ADD+MAX", "ADD")]) == ""

    near = _hovering(0.62, 5)
    _, fits = transitions(near, n_boot=300)
    note = split_note(near, fits, [("ADD", "ADD")])
    assert "never reach P*" in note and "4x its seeds (its runs repeated) would place it" in note


def _levelling_off(learned: list[int], seeds: int = 24):
    """Planted: at each of len(learned) sizes exactly that many of ADD's seeds learn (0.97, the
    others 0.3), which seeds drawn at random per size: a mean accuracy rising slowly from 0.58 and
    levelling off near the learned level; the mixture's seeds all learn from the fifth size on."""
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for i, (p, k) in enumerate(zip(np.geomspace(1e3, 3e4, len(learned)), learned)):
        ok = set(rng.permutation(seeds)[:k].tolist())
        for s in range(seeds):
            common = {"target_op": "ADD", "params": p, "width": i, "seed": s}
            rows.append({**common, "mixture": "ADD", "accuracy": 0.97 if s in ok else 0.3})
            rows.append({**common, "mixture": "ADD+MAX", "accuracy": 0.97 if i >= 4 else 0.1})
    return pd.DataFrame(rows)


def test_a_curve_levelling_off_at_the_learned_level_is_flagged_on_either_side():
    """Mean accuracy 0.58 rising to 0.80 at the largest size: the fit's asymptote sits at the
    learned level, so its estimate is a size while half its replicates never get there; ending
    at 0.77 instead, its estimate is censored above while a share of its replicates reach P*.
    Either way the note says so and that more seeds like these would not settle it."""
    from jointtask.analysis.claims import split_note
    from jointtask.analysis.tables import transitions

    curves = [("ADD", "ADD"), ("ADD+MAX", "ADD")]
    df = _levelling_off([10, 11, 12, 13, 15, 16, 17, 18])
    _, fits = transitions(df, n_boot=300)
    assert fits[("ADD", "ADD")].pstar.censored == "none"
    note = split_note(df, fits, curves)
    assert note.startswith("; ADD alone: ") and "never reach P* in the range, though its estimate does" in note
    assert "more seeds do not place it" in note and "ADD+MAX" not in note

    df = _levelling_off([10, 11, 12, 13, 14, 15, 16, 17])
    _, fits = transitions(df, n_boot=300)
    assert fits[("ADD", "ADD")].pstar.censored == "above"
    note = split_note(df, fits, curves)
    assert note.startswith("; ADD alone: its estimate never reaches P* in the range, though ")
    assert "of its bootstrap replicates do" in note and "more seeds do not place it" in note
