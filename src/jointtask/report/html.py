"""`jointtask analyze DIR` writes DIR/report/: index.html (self-contained, figures inlined),
the PNG figures and CSV tables beside it."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from ..analysis.sweep_analysis import analyze_sweep
from ..analysis.transition import FRAC, LEARNED_FLOOR
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
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>"
                   for _, r in df.iterrows())
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def _p_star_text(r) -> str:
    if r["censored"] == "above":
        return f"> {r['p_max']:.3g} (no transition in range)"
    if r["censored"] == "below":
        return f"< {r['p_min']:.3g} (learned at the smallest size)"
    lo = "open" if pd.isna(r["ci_low"]) or r["ci_low"] is None else f"{r['ci_low']:.3g}"
    hi = "open" if pd.isna(r["ci_high"]) or r["ci_high"] is None else f"{r['ci_high']:.3g}"
    return f"{r['p_star']:.3g} [{lo}, {hi}]"


def _ratio_text(r) -> str:
    if r["ratio"] is None or pd.isna(r["ratio"]):
        return "undetermined (both censored)"
    sym = {"value": "", "lower": "> ", "upper": "< "}.get(r["kind"], "")
    lo = "open" if r["ci_low"] is None or pd.isna(r["ci_low"]) else f"{r['ci_low']:.2f}"
    hi = "open" if r["ci_high"] is None or pd.isna(r["ci_high"]) else f"{r['ci_high']:.2f}"
    return f"{sym}{r['ratio']:.2f}x [{lo}, {hi}] — {r['verdict']}"


def write_report(out: str | Path, n_boot: int = 500, n_perm: int = 999, width: int | None = None,
                 title: str | None = None, intro=None) -> Path:
    """`intro`: HTML, or a callable taking the analysis (transitions and ratios tables) and
    returning HTML, placed at the top of the page."""
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    a = analyze_sweep(out, n_boot=n_boot, n_perm=n_perm, width=width)
    df, trans, rat = a["results"], a["transitions"], a["ratios"]
    exp = a["experiment"]
    name = title or exp.get("name", out.name)
    _csv(df, rep / "results.csv")
    _csv(trans, rep / "transitions.csv")
    _csv(rat, rep / "ratios.csv")
    _csv(a["embedding_table"], rep / "embeddings.csv")
    _csv(a["ablations"], rep / "ablations.csv")

    parts = [f"<h1>jointtask report: {html.escape(name)}</h1>",
             f"<p class=note>jointtask {__version__}, generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
             f"<code>{html.escape(str(out))}</code>: {len(df.run_id.unique())} finished runs. "
             f"Accuracy: greedy decoding from the prompt, exact match of the final answer, on held-out prompts "
             f"(SPEC 3). Tables beside this page: results.csv, transitions.csv, ratios.csv, embeddings.csv, ablations.csv.</p>"]
    if callable(intro):
        intro = intro(a)
    if intro:
        parts.append(intro)
    base = exp.get("base", {})
    parts.append(f"<p class=note>Setup: task {html.escape(str(base.get('task', {})))}; "
                 f"train {html.escape(str(base.get('train', {})))}; sweep {html.escape(str(exp.get('sweep', {})))}</p>")

    parts.append("<h2>Learning transitions</h2>")
    parts.append(f"<p class=note>Definition (ours, SPEC 4): logistic fit in log(params); P* = smallest size at which "
                 f"the fit reaches {FRAC:.0%} of its asymptote; 95% percentile bootstrap over seeds (over points "
                 f"when fewer than 3 seeds). Censored: 'above' when the asymptote is below {LEARNED_FLOOR} or the "
                 f"level is not reached by the largest size; 'below' when reached at the smallest. Raw points are "
                 f"shown beside each curve: held-out accuracy need not rise with width.</p>")
    if not trans.empty:
        t = trans.copy()
        t["P* [95% CI]"] = t.apply(_p_star_text, axis=1)
        parts.append(_table(t, ["mixture", "target_op", "P* [95% CI]", "lo", "hi", "n_runs", "n_seeds", "widths"]))
    for op in sorted(df.target_op.unique()):
        p = figures.accuracy_vs_params(df, a["fits"], op, rep / f"accuracy_{op}.png")
        parts.append(_img(p, f"accuracy against parameters, {op}"))

    parts.append("<h2>Joint-benefit ratios</h2>")
    parts.append("<p class=note>ratio = P*(target alone) / P*(target within the mixture) (SPEC 4); interval from "
                 "the two bootstraps; 'no benefit' when it contains 1; '&gt;' marks a lower bound when the target "
                 "alone has no transition in range.</p>")
    if not rat.empty:
        r = rat.copy()
        r["ratio [95% CI]"] = r.apply(_ratio_text, axis=1)
        parts.append(_table(r, ["target_op", "baseline_mixture", "mixture", "ratio [95% CI]"]))
    else:
        parts.append("<p class=note>(no mixture has its target also trained alone in this sweep)</p>")

    if a["embeddings"]:
        parts.append("<h2>Embedding structure</h2>")
        parts.append("<p class=note>One run per mixture (same width, lowest seed). PCA of the cosine-similarity "
                     "matrix of the number-token embeddings (SPEC 5). Separation score (ours): (mean between-class "
                     "minus mean within-class distance) / mean distance, in the top 3 PCs; p-value from 999 "
                     "label permutations. Ordering: |Spearman rho| of value against PC1.</p>")
        parts.append(_table(a["embedding_table"]))
        parts.append(_img(figures.pca_scatter(a["embeddings"], rep / "embedding_pca.png"), "PCA of embeddings"))
        parts.append(_img(figures.similarity_heatmaps(a["embeddings"], rep / "embedding_similarity.png"),
                          "cosine similarity heatmaps"))
    if not a["transfer"].empty:
        parts.append("<h2>Transfer</h2>")
        parts.append("<p class=note>'A>B': pretrained on A, then trained on B for the same steps as B from scratch "
                     "(SPEC 6). Mean and standard deviation over seeds.</p>")
        parts.append(_table(a["transfer"]))
        parts.append(_img(figures.transfer_plot(a["transfer"], rep / "transfer.png"), "transfer curves"))
    if not a["ablations"].empty:
        ab = a["ablations"]
        parts.append("<h2>Sublayer reliance (attention vs feed-forward)</h2>")
        parts.append("<p class=note>Each sublayer's output replaced by zeros or by its mean over the evaluation "
                     "prompts, at every pass ('all') or one pass; drop in held-out accuracy; mean L2 norm of the "
                     "sublayer's residual update (SPEC 6).</p>")
        parts.append(_table(ab[ab["pass"] == "all"], ["mixture", "target_op", "width", "sublayer", "mode",
                                                     "baseline", "accuracy", "drop", "update_norm"]))
        parts.append(_img(figures.ablation_bars(ab, rep / "ablation.png"), "ablation bars"))
    parts.append("<h2>All runs</h2>")
    parts.append(_table(df, ["mixture", "target_op", "width", "seed", "params", "accuracy", "accuracy_train",
                             "steps", "tokens_seen", "train_seconds", "stop_reason"]))
    page = f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(name)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    atomic_write_text(rep / "index.html", page)
    return rep / "index.html"
