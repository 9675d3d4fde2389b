"""Transition and ratio tables from a results table (one row per run and target op): what
`jointtask ratios`, the claims and the sweep analysis all compute the same way."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from ..errors import UserError
from ..sweep.experiment import Label
from ..tasks.families import family_of
from .transition import LEVEL, N_BOOT, SUCCESS, DesignError, fit_transition, joint_benefit


TRANSITION_COLUMNS = [
    "mixture",
    "target_op",
    "p_star",
    "ci_low",
    "ci_high",
    "censored",
    "bound",
    "p50",
    "p50_ci_low",
    "p50_ci_high",
    "p50_censored",
    "lo",
    "hi",
    "p0",
    "w",
    "p_min",
    "p_max",
    "n_points",
    "n_seeds",
    "n_runs",
    "widths",
    "test_scored",
    "test_exist",
    "improving_share",
    "n_diverged",
    "note",
]
RATIO_COLUMNS = [
    "target_op",
    "comparison",
    "baseline_mixture",
    "mixture",
    "ratio",
    "kind",
    "ci_low",
    "ci_high",
    "verdict",
    "p50_ratio",
    "p50_kind",
    "p50_ci_low",
    "p50_ci_high",
    "p50_verdict",
]


def check_results(df: pd.DataFrame) -> None:
    """Refuse a results table that could give a wrong number without a word: sizes or accuracies
    that are not numbers, seeds that are not integers, empty or unknown mixtures and operations,
    a run listed twice, two rows of one curve for one seed at one size. Names the first bad row
    (its line in the CSV file, the header being line 1)."""
    for col in ("params", "accuracy", "width"):
        if col in df and not pd.api.types.is_numeric_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()
            i = int(bad.to_numpy().argmax())
            raise UserError(f"results table, line {i + 2}: {col} {df[col].iloc[i]!r} is not a number")
    if "seed" in df:
        seeds = pd.to_numeric(df.seed, errors="coerce")
        bad = seeds.isna() | (seeds != seeds.round())
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise UserError(f"results table, line {i + 2}: seed {df.seed.iloc[i]!r} is not an integer")
    pairs = df[["mixture", "target_op"]].reset_index(drop=True).drop_duplicates()  # each curve once, at its first line
    for i, m, op in zip(pairs.index, pairs.mixture, pairs.target_op):
        if not isinstance(m, str) or not isinstance(op, str) or not m.strip() or not op.strip():
            raise UserError(f"results table, line {i + 2}: empty mixture or target_op")
        try:
            family_of([*Label.parse(m).ops, op])
        except UserError as e:
            raise UserError(f"results table, line {i + 2}: {e}") from None
    keys = [("run_id", "target_op")] if "run_id" in df else []
    for cols in keys + [("mixture", "target_op", "params", "seed")]:
        dup = df.duplicated(list(cols))
        if dup.any():
            i = int(dup.to_numpy().argmax())
            what = ", ".join(f"{c} {df[c].iloc[i]}" for c in cols)
            raise UserError(f"results table, line {i + 2}: a duplicated row ({what})")


def transitions(df: pd.DataFrame, n_boot: int = N_BOOT) -> tuple[pd.DataFrame, dict]:
    """One row per (mixture, target op) trained on it; a curve whose design is too small for a
    fit gets a row with the reason in `note` and no estimate. Diverged runs (stop_reason
    'diverged') are counted in `n_diverged` and are never points."""
    check_results(df)
    rows, fits = [], {}
    for key, g in df.groupby(["mixture", "target_op"], sort=True):
        mixture, op = str(key[0]), str(key[1])
        if op not in trained_ops(mixture):
            continue
        row = {
            "mixture": mixture,
            "target_op": op,
            "n_runs": len(g),
            "n_seeds": g.seed.nunique(),
            "widths": ",".join(map(str, sorted(g.width.unique()))),
        }
        if "test_scored" in g:
            row["test_scored"], row["test_exist"] = int(g.test_scored.min()), g.test_exist.min()
        if "stop_reason" in g:
            diverged = (g.stop_reason == "diverged").to_numpy()
            row["n_diverged"] = int(diverged.sum())
            g = g[~diverged]
        try:
            t = fit_transition(g.params.values, g.accuracy.values, g.seed.values, n_boot=n_boot)
        except DesignError as e:
            rows.append({**row, "note": str(e)})
            continue
        fits[(mixture, op)] = t
        row["improving_share"] = improving_share(g, t)
        rows.append({**t.to_dict(), **row, "note": ""})
    return pd.DataFrame(rows, columns=TRANSITION_COLUMNS), fits


BUDGET_LIMITED_SHARE = 0.25  # docs/definitions.md, "Runs whose budget ran out"


def bracket(sizes, t) -> list[float]:
    """The two swept sizes around a curve's transition (P*, else P50; censored above: the two
    largest; below, or no estimate at all: the two smallest)."""
    sizes = sorted(set(float(s) for s in sizes))
    est = t.pstar if t.pstar.value is not None else t.p50
    if est.censored == "above" or (est.value is None and t.p50.censored == "above"):
        return sizes[-2:]
    if est.value is None:
        return sizes[:2]
    below = [s for s in sizes if s <= est.value][-1:] or sizes[:1]
    above = [s for s in sizes if s > est.value][:1] or sizes[-1:]
    return sorted(set(below + above))


def improving_share(g: pd.DataFrame, t) -> float | None:
    """The share of a curve's runs at the sizes bracketing its transition whose validation
    accuracy was still rising when their budget ran out (None: the table has no such column)."""
    if "still_improving" not in g:
        return None
    near = g[g.params.astype(float).isin(bracket(g.params, t))]
    return float(near.still_improving.astype(bool).mean()) if len(near) else None


def budget_limited(share) -> bool:
    return share is not None and not pd.isna(share) and share >= BUDGET_LIMITED_SHARE


FLAT_P = 0.05  # docs/definitions.md, "Curves that do not rise"


def rise_p(g: pd.DataFrame) -> float | None:
    """One-sided Mann-Whitney p-value that a curve's successful runs (test accuracy >= SUCCESS)
    sit at larger sizes than its failed ones; None when all of them succeed or all fail (no trend
    to test: the transition is censored). Diverged runs are no points."""
    if "stop_reason" in g:
        g = g[g.stop_reason != "diverged"]
    ok = g.accuracy.to_numpy(float) >= SUCCESS
    if ok.all() or not ok.any():
        return None
    logp = np.log(g.params.to_numpy(float))
    return float(mannwhitneyu(logp[ok], logp[~ok], alternative="greater").pvalue)


def flat(p: float | None) -> bool:
    return p is not None and p > FLAT_P


PROJECT_SEEDS = 4  # docs/definitions.md, "Curves that do not rise"
TAIL = (1 - LEVEL) / 2  # the share of replicates beyond each end of a 95% interval


def censored_shares(boot_pstar: np.ndarray) -> tuple[float, float]:
    """The shares of P* replicates censored above (never reached) and below (reached at the
    smallest size)."""
    return float(np.mean(boot_pstar == np.inf)), float(np.mean(boot_pstar == -np.inf))


def split(above: float, below: float) -> bool:
    """Replicates on both censored sides, each more than the interval's tail: the interval is
    open at both ends because of where the curve's mean accuracy sits, not because of its step."""
    return above > TAIL and below > TAIL


_PROJECTED: dict[tuple, tuple[float, float]] = {}  # the same runs, shared by sources, are refitted once


def projected_shares(g: pd.DataFrame, times: int = PROJECT_SEEDS, n_boot: int = N_BOOT) -> tuple[float, float]:
    """`censored_shares` of a curve refitted with each seed's runs repeated `times` times under
    new seed labels: where its replicates would fall with that many seeds like the ones it has."""
    if "stop_reason" in g:
        g = g[g.stop_reason != "diverged"]
    params, acc, seeds = g.params.to_numpy(float), g.accuracy.to_numpy(float), g.seed.to_numpy(np.int64)
    order = np.lexsort((acc, params, seeds))
    params, acc, seeds = params[order], acc[order], seeds[order]
    key = (times, n_boot, params.tobytes(), acc.tobytes(), seeds.tobytes())
    if key not in _PROJECTED:
        step = int(seeds.max()) + 1
        t = fit_transition(
            np.tile(params, times),
            np.tile(acc, times),
            np.concatenate([seeds + k * step for k in range(times)]),
            n_boot=n_boot,
        )
        _PROJECTED[key] = censored_shares(t.boot_pstar)
    return _PROJECTED[key]


def trained_ops(mixture: str) -> list[str]:
    """The ops a run label's runs finish training on ('A>B': pretrained on A, then B; 'B@n':
    B from scratch for n steps)."""
    return list(Label.parse(mixture).ops)


ISOMORPHIC = [("ADD", "SADD")]  # alone, the two are the same group with relabelled values: an A/A pair


def comparisons(mixtures: list[str], budgets: dict[str, int]) -> list[tuple[str, str, str, str]]:
    """(comparison, target op, baseline mixture, mixture) for every ratio a sweep can give: each
    mixture against its target alone; against its target alone trained for the mixture's own
    step budget when the sweep has that control ('ADD@9000', planned with budget = 'exposure');
    each transfer 'A>B' against B from scratch for the same steps and against B from scratch for
    the pretraining steps added ('B@n', the sweep's control); and isomorphic single ops against
    each other (A/A checks)."""
    out = []
    for m in mixtures:
        label = Label.parse(m)
        ops = list(label.ops)
        if label.kind == "transfer":
            scratch = "+".join(ops)
            controls = [c for c in mixtures if Label.parse(c).kind == "control" and Label.parse(c).ops == label.ops]
            for op in ops:
                if scratch in mixtures:
                    out.append(("transfer", op, scratch, m))
                out += [("transfer, equal steps", op, c, m) for c in controls]
            continue
        if len(ops) < 2 or label.kind != "mixture":
            continue
        for op in ops:
            if op in mixtures:
                out.append(("joint", op, op, m))
            same = f"{op}@{budgets.get(m)}"
            if same in mixtures:
                out.append(("joint, equal steps", op, same, m))
    for a, b in ISOMORPHIC:
        if a in mixtures and b in mixtures:
            out.append(("A/A (isomorphic)", a, a, b))
    return out


def ratios(fits: dict, budgets: dict[str, int] | None = None) -> pd.DataFrame:
    rows = []
    mixtures = sorted({m for m, _ in fits})
    for comparison, op, base, mixture in comparisons(mixtures, budgets or {}):
        target = trained_ops(mixture)[0] if comparison.startswith("A/A") else op
        if (base, op) not in fits or (mixture, target) not in fits:
            continue
        r = joint_benefit(fits[(base, op)], fits[(mixture, target)])
        rows.append({"target_op": op, "comparison": comparison, "baseline_mixture": base, "mixture": mixture, **r})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


def budgets_of(df: pd.DataFrame) -> dict[str, int]:
    """Each mixture's planned step budget (tables without that column: the most steps a run took)."""
    col = "budget_steps" if "budget_steps" in df else "steps" if "steps" in df else None
    return {str(m): int(g[col].max()) for m, g in df.groupby("mixture")} if col else {}
