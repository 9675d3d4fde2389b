"""The paper's claims, tested against result tables: one row per claim and source, with the
estimate, its interval, the design behind it and a verdict (`jointtask claims DIR...`).

A source is a directory holding a `results.csv` as `jointtask analyze` writes it (one row per run
and target op). Transitions and ratios are recomputed from it with analysis/transition.py, so the
table never carries a number that the committed data do not give.

A verdict is only reported for a design with the power to decide (docs/definitions.md): at least 8 seeds and
5 widths per curve, on test expressions unseen up to argument order (tables with `test_scored`).
Otherwise the row says "not decided" and why.
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ..errors import UserError
from ..schema import Strict
from .tables import (
    PROJECT_SEEDS,
    TAIL,
    budget_limited,
    censored_shares,
    check_results,
    flat,
    improving_share,
    projected_shares,
    rise_p,
    split,
    transitions,
)
from .transition import N_BOOT, joint_benefit

MIN_SEEDS, MIN_WIDTHS = 8, 5
DIFFICULTY_OPS = ["ADD", "MAX", "MED"]  # C1 by default: the hard op, then the easy ops, each trained alone


def fmt_num(v) -> str:
    """Parameter counts and ratios as people read them: 7.3k, 18k, 4.1, 0.52."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "open"
    v = float(v)
    if abs(v) >= 1000:
        return f"{v / 1000:.2g}k" if abs(v) < 10_000 else f"{v / 1000:.0f}k"
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


def fmt_interval(value, lo, hi, censored: str = "none", p_min=None, p_max=None, kind: str = "value") -> str:
    """One formatter for every estimate with an interval: '7.3k [1.5k, 13k]', '> 14k (not learned
    in range)', '< 0.51 [open, 2.9]' (a bound)."""
    if censored == "above":
        return f"> {fmt_num(p_max)} (not reached in range)"
    if censored == "below":
        return f"< {fmt_num(p_min)} (reached at the smallest size)"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undetermined (both sides censored)"
    sign = {"lower": "> ", "upper": "< "}.get(kind, "")
    return f"{sign}{fmt_num(value)} [{fmt_num(lo)}, {fmt_num(hi)}]"


class Claim(Strict):
    """A row of the claims table: a claim of the paper and the result table that tests it
    (src/jointtask/presets/claims.toml lists them)."""

    claim: str
    paper: str
    source: str  # directory name
    scale: str
    command: str
    target: str = "ADD"
    baseline: str = "ADD"
    baseline_target: str = ""  # the op read on the baseline curve (default: target; an A/A pair of two ops)
    mixture: str = ""  # empty: the C1 difficulty ordering of `ops`
    ops: list[str] = DIFFICULTY_OPS  # C1: the hard op first, then the easy ones
    expects: Literal["benefit", "no benefit"] = "benefit"


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims table's rows, in order (default: the packaged claims.toml)."""
    path = path or Path(str(resources.files("jointtask") / "presets" / "claims.toml"))
    try:
        rows = tomllib.loads(path.read_text())["claim"]
        return [Claim.model_validate(r) for r in rows]
    except (OSError, KeyError, tomllib.TOMLDecodeError, ValidationError) as e:
        raise UserError(f"cannot read the claims file {str(path)!r}: {e}") from None


CLAIMS = load_claims()


def source_names() -> set[str]:
    """The result directories that claims are read from."""
    return {c.source for c in CLAIMS}


def load_results(directory: Path) -> pd.DataFrame:
    f = directory / "results.csv"
    if not f.is_file():
        f = directory / "report" / "results.csv"
    if not f.is_file():
        raise UserError(f"{str(directory)!r} holds no results.csv")
    try:
        return pd.read_csv(f)
    except Exception as e:
        raise UserError(f"cannot read {str(f)!r}: {e}") from None


def protocol_of(df: pd.DataFrame) -> str:
    """The split protocol of a results table: its `protocol` column; tables written before
    protocols existed are 'strict' when they count test expressions, else 'old split'."""
    if "protocol" in df and df.protocol.notna().any():
        names = sorted(set(df.protocol.dropna()))
        if len(names) > 1:
            raise UserError(f"a results table mixes split protocols ({', '.join(names)})")
        return names[0]
    return "strict" if "test_scored" in df else "old split"


PROTOCOL_TEXT = {
    "paper": "paper protocol (held-out ordered triples)",
    "strict": "strict protocol (test unseen up to argument order)",
    "old split": "old split (test prompts may reorder training prompts)",
}


def design(df: pd.DataFrame, curves: list[tuple[str, str]]) -> tuple[str, str]:
    """'seeds x widths 8x5 / 8x5; ...' for the (mixture, target op) curves ('16-48x12': from 16
    to 48 seeds a width), and why that design may not give a verdict ('' where it may: its
    fewest seeds a width count)."""
    protocol = protocol_of(df)
    parts, ws, seeds, widths = [], set(), [], []
    for m, op in curves:
        g = df[(df.mixture == m) & (df.target_op == op)]
        per_width = g.groupby("width").seed.nunique()  # more seeds at some widths: 'a-b'
        fewest, most = (int(per_width.min()), int(per_width.max())) if len(per_width) else (0, 0)
        seeds.append(fewest)
        widths.append(g.width.nunique())
        parts.append(f"{fewest}x{widths[-1]}" if fewest == most else f"{fewest}-{most}x{widths[-1]}")
        ws |= set(g.width)
    span = f"widths {min(ws)}-{max(ws)}, " if ws else ""
    short = [f"{_count(min(seeds), 'seed')} at a width of the {MIN_SEEDS}"] if min(seeds) < MIN_SEEDS else []
    short += [f"{_count(min(widths), 'width')} of the {MIN_WIDTHS}"] if min(widths) < MIN_WIDTHS else []
    why = ["old split"] if protocol == "old split" else []
    why += [f"design too small: {' and '.join(short)} a verdict needs"] if short else []
    return f"{span}seeds x widths {' / '.join(parts)}; {PROTOCOL_TEXT[protocol]}", "; ".join(why)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def budget_note(df: pd.DataFrame, fits: dict, curves: list[tuple[str, str]]) -> str:
    """'; budget-limited' when a curve's runs around its transition were mostly still learning
    when their budget ran out (tables.BUDGET_LIMITED_SHARE of them or more)."""
    for m, op in curves:
        g = df[(df.mixture == m) & (df.target_op == op)]
        if (m, op) in fits and budget_limited(improving_share(g, fits[(m, op)])):
            return "; budget-limited"
    return ""


def flat_note(df: pd.DataFrame, curves: list[tuple[str, str]]) -> str:
    """'; ADD alone: success does not rise with size (p = 0.4)' for each compared curve whose runs
    succeed and fail at sizes a one-sided Mann-Whitney test cannot tell apart (tables.FLAT_P):
    a share of seeds learns at every size, so the curve's transition measures how often a seed
    learns more than the size it takes."""
    out = ""
    for m, op in curves:
        p = rise_p(df[(df.mixture == m) & (df.target_op == op)])
        if flat(p):
            name = f"{op} alone" if m == op else f"{op} in {m}"
            out += f"; {name}: success does not rise with size (p = {p:.2g})"
    return out


def split_note(df: pd.DataFrame, fits: dict, curves: list[tuple[str, str]]) -> str:
    """'; ADD alone: 83% of bootstrap replicates never reach P*, 7% reach it at the smallest
    size' for a compared curve whose replicates fall on both censored sides, each more than the
    interval's tail (2.5%): a curve about as far from 'learned' at every size (a mean accuracy near
    the learned level, not a step). '; ADD alone: 78% of bootstrap replicates never reach P* in the
    range, though its estimate does' for one whose estimate is a size while more than the tail of
    its replicates never get there, and '; ADD alone: its estimate never reaches P* in the range,
    though 30% of its bootstrap replicates do' the other way round (a mean accuracy that levels off
    near the learned level, or a step at the end of the range): they open the ratio's interval at
    one end. Whether more seeds would place the curve is projected by refitting it with each seed's
    runs repeated (tables.PROJECT_SEEDS times the seeds)."""
    out = ""
    for m, op in curves:
        if (m, op) not in fits:
            continue
        t = fits[(m, op)]
        above, below = censored_shares(t.boot_pstar)
        both = split(above, below)
        reached = 1 - above - below  # replicates that place P* inside the range
        # the estimate on one side of the learned level, more than the tail of its replicates on the other
        never = not both and above > TAIL and t.pstar.censored == "none"
        ever = not both and reached > TAIL and t.pstar.censored == "above"
        if not (both or never or ever):
            continue
        name = f"{op} alone" if m == op else f"{op} in {m}"
        more_above, more_below = projected_shares(df[(df.mixture == m) & (df.target_op == op)])
        why = ""
        if both:
            still, said = split(more_above, more_below), f"still {more_above:.0%} and {more_below:.0%}"
            out += f"; {name}: {above:.0%} of bootstrap replicates never reach P*, {below:.0%} reach it at the smallest size"
            why = "mean accuracy near the learned level at every size; "
        elif never:
            still, said = more_above > TAIL, f"still {more_above:.0%}"
            out += (
                f"; {name}: {above:.0%} of bootstrap replicates never reach P* in the range, though its estimate does"
            )
        else:
            still, said = 1 - more_above - more_below > TAIL, f"still {1 - more_above - more_below:.0%}"
            out += f"; {name}: its estimate never reaches P* in the range, though {reached:.0%} of its bootstrap replicates do"
        then = (
            f"with {PROJECT_SEEDS}x its seeds (its runs repeated) {said}: more seeds do not place it"
            if still
            else f"{PROJECT_SEEDS}x its seeds (its runs repeated) would place it"
        )
        out += f" ({why}{then})"
    return out


def load_calibration() -> list[dict]:
    """The calibration benchmark's rows (benchmarks/calibration.py, packaged with the toolkit)."""
    path = Path(str(resources.files("jointtask") / "presets" / "calibration.json"))
    return json.loads(path.read_text())["rows"]


def _detects(rows: list[dict], key: str) -> str:
    """The smallest planted ratio called a benefit in 80% of the pairs ('> 3x' when none is)."""
    hits = sorted(r["ratio"] for r in rows if r["ratio"] > 1 and r.get(key, 0) >= 0.8)
    return f"{hits[0]:g}x" if hits else f"> {max(r['ratio'] for r in rows):g}x"


def power_note(df: pd.DataFrame, curves: list[tuple[str, str]], rows: list[dict] | None = None) -> str:
    """What the calibration at this design can detect (80% power) and how often it calls equal
    curves "no benefit", at these seeds and at the next design with more: what would decide."""
    rows = load_calibration() if rows is None else rows
    seeds, steps = [], []
    for m, op in curves:
        g = df[(df.mixture == m) & (df.target_op == op)]
        if g.empty:  # a curve not trained yet: no design to calibrate
            return ""
        seeds.append(int(g.groupby("width").seed.nunique().min()))  # the fewest a width
        ws = sorted(set(g.width))
        steps += [b / a for a, b in zip(ws, ws[1:])]
    family = "dense" if steps and float(np.median(steps)) <= 1.3 else "wide"
    designs: dict[int, list[dict]] = {}
    for r in rows:
        if r["design"].split("-")[0] == family:
            designs.setdefault(r["seeds"], []).append(r)
    if not designs:
        return ""
    have = min(seeds)
    at = max([k for k in designs if k <= have], default=min(designs))

    def says(k: int) -> str:
        rs = designs[k]
        aa = next((r.get("p50_no_benefit") for r in rs if r["ratio"] == 1), None)
        equal = f", equal curves called no benefit {aa:.0%}" if aa is not None else ""
        return f"{k} seeds: 80% power from {_detects(rs, 'p50_benefit')} (P50) / {_detects(rs, 'benefit')} (P*){equal}"

    more = [k for k in sorted(designs) if k > at]
    tail = f"; with {says(more[0])}" if more else ""
    return f"; calibration ({family} widths) at {says(at)}{tail}"


def _claim_verdict(c: Claim, r: dict, why: str) -> str:
    if why:
        return f"not decided ({why})"
    v = r["verdict"]
    if c.expects == "benefit":
        out = {
            "benefit": "reproduced",
            "no benefit": "not reproduced (no benefit)",
            "harm": "not reproduced (harm)",
        }.get(v, "inconclusive")
    else:
        out = {
            "no benefit": "reproduced",
            "harm": "consistent (a cost, not only no benefit)",
            "benefit": "not reproduced (a benefit)",
        }.get(v, "inconclusive")
    if r["p50_verdict"] != v:
        out += f"; P50 view: {r['p50_verdict']}"
    return out


def curves_of(c: Claim) -> list[tuple[str, str]]:
    """The (mixture, target op) curves a claim compares."""
    if not c.mixture:
        return [(op, op) for op in c.ops]
    return [(c.baseline, c.baseline_target or c.target), (c.mixture, c.target)]


def claim_rows(sources: dict[str, pd.DataFrame], n_boot: int = N_BOOT, fits: dict | None = None) -> list[dict]:
    """Every claim whose source is among `sources` (name -> results table). `fits` (name ->
    `tables.transitions` fits of that table) spares refitting; each curve is fitted once."""
    fits = dict(fits or {})
    for name, df in sources.items():
        check_results(df)  # the whole table: a bad row outside the claims' curves is an error too
        if name not in fits:
            wanted = {k for c in CLAIMS if c.source == name for k in curves_of(c)}
            keep = [(m, op) in wanted for m, op in zip(df.mixture, df.target_op)]
            fits[name] = transitions(df[keep], n_boot)[1]
    return [claim_row(c, sources[c.source], fits[c.source]) for c in CLAIMS if c.source in sources]


def claim_row(c: Claim, df: pd.DataFrame, fits: dict) -> dict:
    """One claims-table row from a source's results table and its transition fits."""
    curves = curves_of(c)
    text, why = design(df, curves)
    if not all(k in fits for k in curves):
        ours, verdict = "no fit (design too small)", f"not decided ({why})" if why else "not decided"
    elif not c.mixture:
        ours, verdict = _difficulty({op: fits[(op, op)] for op in c.ops}, why)
    else:
        r = joint_benefit(fits[curves[0]], fits[curves[1]])
        ours = (
            f"ratio P* {fmt_interval(r['ratio'], r['ci_low'], r['ci_high'], kind=r['kind'])}, "
            f"P50 {fmt_interval(r['p50_ratio'], r['p50_ci_low'], r['p50_ci_high'], kind=r['p50_kind'])}; "
            f"P*({curves[0][1]}) {_pstar(fits[curves[0]])} {'alone' if c.baseline == curves[0][1] else 'in ' + c.baseline}, "
            f"{_pstar(fits[curves[1]])} in {c.mixture}"
        )
        verdict = _claim_verdict(c, r, why)
    if not verdict.startswith("not decided"):
        verdict += budget_note(df, fits, curves) + flat_note(df, curves) + split_note(df, fits, curves)
    if c.mixture and (verdict.startswith("inconclusive") or why.startswith("design too small")):
        verdict += power_note(df, curves)  # what this design detects, or what the full one would
    return {
        "claim": c.claim,
        "the paper": c.paper,
        "ours, 95% interval": ours,
        "scale": c.scale,
        "protocol": protocol_of(df),
        "design": text,
        "verdict": verdict,
        "source": c.source,
        "command": c.command,
    }


def _pstar(t) -> str:
    f = t.pstar
    return fmt_interval(f.value, t.pstar_ci[0], t.pstar_ci[1], f.censored, f.p_min, f.p_max)


def _difficulty(t: dict, why: str) -> tuple[str, str]:
    """C1: the hard op's P* (the first of `t`) above each easy op's (each trained alone)."""
    hard, *easy = t
    ours = "; ".join(f"P*({op}) {_pstar(t[op])}" for op in t)
    # the hard op is harder when its interval lies above every easy op's (censored below: the smallest size)
    low_add = (
        t[hard].pstar_ci[0]
        if t[hard].pstar.censored == "none"
        else (t[hard].pstar.p_max if t[hard].pstar.censored == "above" else None)
    )
    high_easy = [
        t[op].pstar_ci[1]
        if t[op].pstar.censored == "none"
        else (t[op].pstar.p_min if t[op].pstar.censored == "below" else math.inf)
        for op in easy
    ]
    harder = low_add is not None and all(h is not None and low_add > h for h in high_easy)
    verdict = f"not decided ({why})" if why else ("reproduced" if harder else "inconclusive")
    return ours, verdict


def not_run_row(c: Claim) -> dict:
    """The row of a claim whose source has no records among the directories read."""
    return {
        "claim": c.claim,
        "the paper": c.paper,
        "ours, 95% interval": "not run",
        "scale": c.scale,
        "protocol": "",
        "design": "no records",
        "verdict": f"not decided (no records of {c.source}: `{c.command}` trains them)",
        "source": c.source,
        "command": c.command,
    }


def claims_table(dirs: list[Path], fmt: str = "md", n_boot: int = N_BOOT, missing: bool = False) -> str:
    """The claims table for result directories (matched to claims by directory name); with
    `missing`, a claim whose source is not among them has a row too, saying it was not run."""
    known = {c.source for c in CLAIMS}
    sources = {Path(d).name: load_results(Path(d)) for d in dirs if Path(d).name in known}
    if not sources:
        raise UserError(f"none of the given directories is a source of a claim ({', '.join(sorted(known))})")
    rows = iter(claim_rows(sources, n_boot))  # in the order of CLAIMS, as the rows below
    df = pd.DataFrame(
        [next(rows) if c.source in sources else not_run_row(c) for c in CLAIMS if missing or c.source in sources]
    )
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt != "md":
        raise UserError(f"unknown format {fmt!r} (md or csv)")
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"
