"""`jointtask analyze DIR` writes DIR/report/: index.html (self-contained, figures inlined),
the PNG figures and CSV tables beside it."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from ..analysis.claims import fmt_interval
from ..analysis.residues import embedding_summary, residue_summary
from ..analysis.tables import BUDGET_LIMITED_SHARE
from ..analysis.sweep_analysis import Analysis, analyze_sweep
from ..analysis.transition import FRAC, LEARNED_FLOOR, N_BOOT, SUCCESS
from ..fileio import atomic_write_text
from . import figures

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:13px}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}code{background:#f5f5f5;padding:1px 4px}"""


def _fmt(v):
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def _table(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    if df is None or df.empty:
        return "<p class=note>(none)</p>"
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>" for _, r in df.iterrows()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _p_star_text(r) -> str:
    if r["note"]:
        return r["note"]
    return fmt_interval(r["p_star"], r["ci_low"], r["ci_high"], r["censored"], r["p_min"], r["p_max"])


def _p50_text(r) -> str:
    if r["note"]:
        return ""
    return fmt_interval(r["p50"], r["p50_ci_low"], r["p50_ci_high"], r["p50_censored"], r["p_min"], r["p_max"])


def _ratio_text(r, prefix: str = "") -> str:
    v = fmt_interval(r[f"{prefix}ratio"], r[f"{prefix}ci_low"], r[f"{prefix}ci_high"], kind=r[f"{prefix}kind"])
    flag = (
        " (A/A check FAILED: the interval excludes 1)"
        if (r["comparison"].startswith("A/A") and r[f"{prefix}verdict"] in ("benefit", "harm"))
        else ""
    )
    return f"{v}: {r[f'{prefix}verdict']}{flag}"


def write_report(
    out: str | Path,
    n_boot: int = N_BOOT,
    n_perm: int = 999,
    width: int | None = None,
    claims_source: str | None = None,
    report: str | Path | None = None,
) -> tuple[Path, Analysis]:
    """Analyse the sweep in OUT and write `report` (default OUT/report/): the analysis' tables,
    then index.html and its figures. With `claims_source` (a claims source's name), the claims
    whose source it is head the page. Returns the page and the analysis."""
    out = Path(out)
    rep = Path(report) if report is not None else out / "report"
    a = analyze_sweep(out, n_boot=n_boot, n_perm=n_perm, width=width, claims_source=claims_source)  # first: refuses
    rep.mkdir(parents=True, exist_ok=True)  # a directory with no sweep before anything is written
    marker = rep / "INCOMPLETE"  # removed once index.html is written: a killed analyze leaves it behind
    atomic_write_text(marker, "this report was being written when its process stopped; run `jointtask analyze` again\n")
    a.write_tables(rep)
    atomic_write_text(rep / "index.html", render(a, out, rep))
    marker.unlink()
    return rep / "index.html", a


def _protocols(df) -> str:
    return ", ".join(sorted(set(df.protocol.dropna()))) if "protocol" in df and len(df) else "strict"


def _test_sets(df):
    """One row per target op: protocol, distinct test samples scored and in the split, share of
    their atomic steps evaluated in training (the same for every run of an op and protocol)."""
    cols = [c for c in ("protocol", "test_scored", "test_exist", "test_steps_seen") if c in df]
    return df.groupby("target_op", as_index=False)[cols].first()


def render(a: Analysis, out: Path, rep: Path) -> str:
    """The report page for an analysis of the sweep in `out`; figures are written to `rep`."""
    df, trans, rat, claims = a.results, a.transitions, a.ratios, a.claims
    exp = a.experiment
    name = exp.get("name", out.name)
    parts = [
        f"<h1>jointtask report: {html.escape(name)}</h1>",
        f"<p class=note>jointtask {__version__}, generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
        f"<code>{html.escape(str(out))}</code>: {len(df.run_id.unique())} finished runs. "
        f"Accuracy: greedy decoding from the prompt, exact match of the final answer, on test samples "
        f"held out under the {html.escape(_protocols(df))} split protocol "
        f"(docs/definitions.md, Splits), never read for early stopping. Tables beside this page: results.csv, "
        f"transitions.csv, ratios.csv, embeddings.csv, ablations.csv, claims.csv.</p>",
    ]
    if not df.empty:
        parts.append("<h2>Test sets</h2>")
        parts.append(
            "<p class=note>Per operation: distinct test samples scored and in the split (depth 1; nested "
            "expressions are not enumerated), and the share of their atomic steps (an operation applied to "
            "numbers, up to argument order) that training samples evaluate: near all under the paper "
            "protocol, none of the prompts under the strict one.</p>"
        )
        parts.append(_table(_test_sets(df)))
    if not claims.empty:
        parts.append(
            "<h2>Claims</h2>" + _table(claims, ["claim", "the paper", "ours, 95% interval", "design", "verdict"])
        )
    base = exp.get("base", {})
    parts.append(
        f"<p class=note>Setup: task {html.escape(str(base.get('task', {})))}; "
        f"train {html.escape(str(base.get('train', {})))}; sweep {html.escape(str(exp.get('sweep', {})))}</p>"
    )

    parts.append("<h2>Learning transitions</h2>")
    parts.append(
        f"<p class=note>Definitions (ours; docs/definitions.md, Transitions): P* = smallest size at which a "
        f"logistic fit in log(params) reaches {FRAC:.0%} of its asymptote; P50 = size at which half the seeds "
        f"reach test accuracy {SUCCESS} (logistic regression of success on log(params)). 95% percentile "
        f"bootstrap over seeds, never narrower than the two swept sizes around the estimate. Censored: "
        f"'&gt;' when not reached by the largest size (P*: also when the asymptote is below "
        f"{LEARNED_FLOOR}), '&lt;' when reached at the smallest. A curve with fewer than 3 widths or 3 "
        f"seeds gets no fit. improving_share: the share of runs at the two sizes around the transition "
        f"whose validation accuracy was still rising when their budget ran out (a curve is budget-limited "
        f"from {BUDGET_LIMITED_SHARE:.0%}). Raw points are shown beside each curve: test accuracy need not "
        f"rise with width.</p>"
    )
    if not trans.empty:
        t = trans.copy()
        t["P* [95% CI]"] = t.apply(_p_star_text, axis=1)
        t["P50 [95% CI]"] = t.apply(_p50_text, axis=1)
        parts.append(
            _table(
                t,
                [
                    "mixture",
                    "target_op",
                    "P* [95% CI]",
                    "P50 [95% CI]",
                    "lo",
                    "hi",
                    "n_runs",
                    "n_seeds",
                    "widths",
                    "improving_share",
                ],
            )
        )
    for op in sorted(df.target_op.unique()):
        p = figures.accuracy_vs_params(df, a.fits, op, rep / f"accuracy_{op}.png")
        parts.append(_img(p, f"accuracy against parameters, {op}"))

    parts.append("<h2>Joint-benefit ratios</h2>")
    parts.append(
        "<p class=note>ratio = P(target alone) / P(target within the mixture), for P* and for P50 "
        "(docs/definitions.md, Ratios); "
        "unpaired bootstrap interval. Verdicts: benefit (interval above 1), harm (below 1), no benefit "
        "(contains 1, inside (1/2, 2)), inconclusive (otherwise). '&gt;' / '&lt;' mark bounds when one side "
        "is censored. 'joint, equal steps': against the target alone trained for the mixture's own steps "
        "(the control of an equal-exposure sweep). 'A/A': two single ops that are the same task up to "
        "relabelling; its interval should contain 1.</p>"
    )
    if not rat.empty:
        r = rat.copy()
        r["P* ratio [95% CI]"] = r.apply(_ratio_text, axis=1)
        r["P50 ratio [95% CI]"] = r.apply(lambda x: _ratio_text(x, "p50_"), axis=1)
        parts.append(
            _table(
                r, ["target_op", "comparison", "baseline_mixture", "mixture", "P* ratio [95% CI]", "P50 ratio [95% CI]"]
            )
        )
    else:
        parts.append("<p class=note>(no mixture has its target also trained alone in this sweep)</p>")

    if (out / "residues.csv").is_file():  # written by `jointtask residues`
        table = pd.read_csv(out / "residues.csv")
        parts.append("<h2>What failed runs learned</h2>")
        parts.append(
            "<p class=note>Runs by the largest modulus d whose residue of the answer they get right on 90% of "
            f"the {html.escape(', '.join(sorted(set(table.split))))} prompts (docs/definitions.md, Residues): "
            "mod n is the operation learned; mod d only, a partial solution; nothing, not even parity. "
            f"From residues.csv, written by <code>jointtask residues</code> from the runs' checkpoints: "
            f"{table.run_id.nunique()} of the {df.run_id.nunique()} finished runs.</p>"
        )
        parts.append(_table(residue_summary(table)))
        frequencies = embedding_summary(table)
        if len(frequencies):
            parts.append(
                "<p class=note>Where the runs' number embeddings put their power, by what the runs know: "
                "the mean share at the frequencies of Z_n that tell a value modulo each prime power of n "
                f"(docs/definitions.md, Residues), over the {int(frequencies.runs.sum())} runs whose "
                "embeddings were read.</p>"
            )
            parts.append(_table(frequencies))

    if a.embeddings:
        parts.append("<h2>Embedding structure</h2>")
        parts.append(
            "<p class=note>One run per mixture (same width, lowest seed). PCA of the cosine-similarity "
            "matrix of the number-token embeddings (docs/definitions.md, Embeddings). Separation score (ours): (mean between-class "
            "minus mean within-class distance) / mean distance, in the top 3 PCs; p-value from 999 "
            "label permutations. Ordering: |Spearman rho| of value against PC1.</p>"
        )
        parts.append(_table(a.embedding_table))
        parts.append(_img(figures.pca_scatter(a.embeddings, rep / "embedding_pca.png"), "PCA of embeddings"))
        parts.append(
            _img(
                figures.similarity_heatmaps(a.embeddings, rep / "embedding_similarity.png"),
                "cosine similarity heatmaps",
            )
        )
    if not a.transfer.empty:
        parts.append("<h2>Transfer</h2>")
        parts.append(
            "<p class=note>'A>B': pretrained on A, then trained on B for the same steps as B from scratch "
            "(docs/definitions.md, Transfer). Mean and standard deviation over seeds.</p>"
        )
        parts.append(_table(a.transfer))
        parts.append(_img(figures.transfer_plot(a.transfer, rep / "transfer.png"), "transfer curves"))
    if not a.ablations.empty:
        ab = a.ablations
        parts.append("<h2>Sublayer reliance (attention vs feed-forward)</h2>")
        parts.append(
            "<p class=note>Each sublayer's output replaced by zeros or by its mean over the evaluation "
            "expressions, at every pass ('all') or one pass; drop in test accuracy; mean L2 norm of the "
            "sublayer's residual update (docs/definitions.md, Ablations).</p>"
        )
        parts.append(
            _table(
                ab[ab["pass"] == "all"],
                ["mixture", "target_op", "width", "sublayer", "mode", "baseline", "accuracy", "drop", "update_norm"],
            )
        )
        parts.append(_img(figures.ablation_bars(ab, rep / "ablation.png"), "ablation bars"))
    parts.append("<h2>All runs</h2>")
    parts.append(
        _table(
            df,
            [
                "mixture",
                "target_op",
                "width",
                "seed",
                "params",
                "accuracy",
                "accuracy_validation",
                "accuracy_train",
                "steps",
                "tokens_seen",
                "train_seconds",
                "stop_reason",
            ],
        )
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(name)}</title><style>{CSS}</style>"
        f"</head><body>{''.join(parts)}</body></html>"
    )
