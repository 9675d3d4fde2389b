"""The numbers in README.md and docs/, printed from committed data (this repository's own
upkeep, apart from the toolkit).

Each block sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in its file and is the output
of one function here over files in the repository. `python scripts/docs_blocks.py --write`
rewrites them; without `--write` (and in tests/test_docs.py) it fails when any differs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from jointtask.analysis.claims import claims_table, fmt_num
from jointtask.analysis.residues import embedding_summary, residue_summary
from jointtask.analysis.tables import trained_ops
from jointtask.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def claims_block(root: Path) -> str:
    dirs = sorted(p for p in (root / "docs" / "results").iterdir() if (p / "results.csv").exists())
    return "Printed by `jointtask claims docs/results/* --missing` from the committed result tables.\n\n" + (
        claims_table(dirs, "md", missing=True)
    )


def quick_block(root: Path) -> str:
    d = root / "docs" / "results" / "quick"
    took = json.loads((d / "reproduce.json").read_text())
    df = pd.read_csv(d / "results.csv")
    per = df.groupby("mixture").agg(seeds=("seed", "nunique"), widths=("width", "nunique"))
    design = ", ".join(f"{m} {r.seeds} seeds x {r.widths} widths" for m, r in per.iterrows())
    return (
        f"`jointtask reproduce quick` trained {df.run_id.nunique()} runs ({design}) in "
        f"{took['total_seconds'] / 60:.0f} min on {took['workers']} worker processes "
        f"({took['processor']}): {took['sweep_seconds'] / 60:.0f} min of sweep, "
        f"{took['analysis_seconds'] / 60:.1f} min of analysis (docs/results/quick/reproduce.json)."
    )


CALIBRATION = Path("src") / "jointtask" / "presets" / "calibration.json"


def cpu_block(root: Path) -> str:
    """How far `jointtask reproduce cpu` has come, from the committed records of its experiments:
    the distinct runs it plans, those finished, and the sweep time its invocations took."""
    from jointtask.reproduce import load_preset
    from jointtask.sweep.estimate import planned_runs
    from jointtask.sweep.experiment import plan

    exps, _ = load_preset("cpu")
    planned = {r.run_id for e in exps for r in planned_runs(plan(e))}
    done, seconds, trained, processors, workers = set(), 0.0, 0, set(), set()
    for e in exps:
        d = root / "docs" / "results" / e.name
        done |= {p.name for p in (d / "runs").glob("*") if (p / "result.json").exists()} & planned
        for line in (d / "sweep_log.jsonl").read_text().splitlines() if (d / "sweep_log.jsonl").exists() else []:
            row = json.loads(line)
            seconds += row["seconds"]
            trained += row["trained"]
            processors.add(row["processor"])
            workers.add(row["workers"])
    left = len(planned) - len(done)
    return (
        f"`jointtask reproduce cpu` plans {len(planned)} distinct runs; {len(done)} are finished and committed "
        f"as records (docs/results/cpu-*/runs/), {left} are left. Its sweeps have trained {trained} runs in "
        f"{seconds / 3600:.1f} h of wall time on {' / '.join(map(str, sorted(workers)))} worker processes "
        f"({', '.join(sorted(processors))}; docs/results/cpu-*/sweep_log.jsonl)."
    )


def calibration_block(root: Path, path: Path | None = None) -> str:
    """The calibration tables of docs/definitions.md, from the benchmark's JSON (default: the packaged one)."""
    rows = json.loads((path or root / CALIBRATION).read_text())["rows"]
    lines = []
    for design in dict.fromkeys(r["design"] for r in rows):
        rs = [r for r in rows if r["design"] == design]
        r0 = rs[0]
        lines += [
            f"Design `{design}` ({r0['experiment']}): {r0['widths']} widths, {fmt_num(r0['sizes'][0])} to "
            f"{fmt_num(r0['sizes'][-1])} parameters, {r0['seeds']} seeds; transitions planted within "
            f"{r0.get('spread', 3.0):g}x of the middle size; {r0['reps']} planted pairs per row, "
            f"{r0['n_boot']} bootstrap replicates per fit. Share of pairs given each verdict:",
            "",
        ]
        counted = [v for v in ("benefit", "harm", "no_benefit") if v in r0]  # the verdicts these rows count
        names = [f"{view} {v.replace('_', ' ')}" for view in ("P*", "P50") for v in counted]
        lines += [
            "| planted ratio | P* interval covers the truth | P50 interval covers the truth | "
            + " | ".join(names)
            + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        for r in rs:
            verdicts = [r[f"{p}{v}"] for p in ("", "p50_") for v in counted]
            lines.append(
                f"| {r['ratio']:g} | {r['pstar_covered']:.0%} | {r['p50_covered']:.0%} | "
                + " | ".join(f"{v:.0%}" for v in verdicts)
                + " |"
            )
        power = [r["ratio"] for r in rs if r["ratio"] > 1 and r["benefit"] >= 0.8]
        power50 = [r["ratio"] for r in rs if r["ratio"] > 1 and r["p50_benefit"] >= 0.8]
        tried = ", ".join(f"{r['ratio']:g}" for r in rs if r["ratio"] > 1)
        lines += [
            "",
            f"Smallest planted ratio called a benefit with at least 80% power (of {tried}): "
            f"P* {f'{min(power):g}x' if power else 'none'}, P50 {f'{min(power50):g}x' if power50 else 'none'}.",
            "",
        ]
    return "\n".join(lines[:-1])


def throughput_block(root: Path) -> str:
    res = json.loads((root / "docs" / "bench" / "throughput.json").read_text())
    m = res["machine"]
    lines = [
        f"`jointtask bench{' --quick' if res['seconds_per_measurement'] < 5 else ''} --out docs/bench/throughput.json` "
        f"on {m['processor']} ({', '.join(m['vector_extensions'])}), torch {m['torch']}, one thread; path: "
        f"{res['path']}; {res['rounds']} alternating rounds of {res['seconds_per_measurement']:g} s per loop.",
        "",
        "| width | ours tok/s | naive tok/s | ratio (medians) | ratio per round | ours, share of FP32 peak |",
        "|---|---|---|---|---|---|",
    ]
    for w, r in sorted(res["widths"].items(), key=lambda kv: int(kv[0])):
        rounds = " / ".join(f"{x:.2f}" for x in r["ratio_per_round"])
        lines.append(
            f"| {w} | {r['ours_tok_s']:,.0f} | {r['naive_tok_s']:,.0f} | {r['ratio']:.2f} | {rounds} | "
            f"{r['peak_fraction']:.1%} |"
        )
    lines += ["", f"Recommendation printed: {res['recommendation']}."]
    return "\n".join(lines)


REGIME_SOURCES = (
    "pilot-mod10",
    "strict-quick",
    "strict-c1",
    "strict-c3c5",
    "strict-c6",
    "strict-add-prod-mod11",
    "strict-transfer",
    "strict-exposure",
)


def regimes_block(root: Path) -> str:
    """Per CPU source: each curve's mean test accuracy by width, with the seeds that reached 0.8."""
    parts = []
    for name in REGIME_SOURCES:
        f = root / "docs" / "results" / name / "results.csv"
        if not f.exists():
            continue
        df = pd.read_csv(f)
        df = df[[op in trained_ops(m) for m, op in zip(df.mixture, df.target_op)]]
        g = (
            df.assign(learned=df.accuracy >= 0.8)
            .groupby(["mixture", "target_op", "width"])
            .agg(acc=("accuracy", "mean"), k=("learned", "sum"), n=("seed", "nunique"))
            .reset_index()
        )
        widths = sorted(g.width.unique())
        lines = [
            f"**{name}**",
            "",
            "| mixture | target | " + " | ".join(f"width {w}" for w in widths) + " |",
            "|---|---|" + "---|" * len(widths),
        ]
        for (m, op), gm in g.groupby(["mixture", "target_op"]):
            cells = {int(w): f"{a:.2f} ({k}/{n})" for w, a, k, n in zip(gm.width, gm.acc, gm.k, gm.n)}
            lines.append(f"| {m} | {op} | " + " | ".join(cells.get(int(w), "") for w in widths) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


PILOT_SOURCES = (  # in the order docs/regimes.md reads them
    "pilot-mod20",
    "regime-b256",
    "regime-lr4e3",
    "regime-b64",
    "regime-b64-lr1e3",
    "regime-b64-8seeds",
    "regime-wd1",
    "regime-long",
    "pilot-depth2",
    "pilot-c1-mod20",
    "pilot-strict-wd01",
    "pilot-strict-wd1",
    "pilot-quick",
    "pilot-quick-2",
)


def pilots_block(root: Path) -> str:
    """Per regime pilot: the setting, and by width the mean validation and training accuracy of the
    target, with the seeds whose validation accuracy reached 0.8 (never test accuracy: a regime
    is chosen before the test results of the sweeps are read)."""
    lines = []
    for name in PILOT_SOURCES:
        d = root / "docs" / "results" / name
        if not (d / "results.csv").exists():
            continue
        df = pd.read_csv(d / "results.csv")
        base = json.loads((d / "experiment.json").read_text())["base"]
        t, task = base["train"], base["task"]
        protocol = base.get("data", {}).get("protocol", "paper")
        depth = task.get("max_depth", 2)
        nesting = "no nesting" if depth == 1 else f"nesting to {depth} levels"
        lines += [
            f"**{name}** (`experiments/cpu/{name}.toml`): mod {task['modulus']}, {nesting}, {protocol} protocol, "
            f"batch {t['batch_size']}, {t['steps']:,} steps, peak learning rate {t['lr']:g}, weight decay "
            f"{t['weight_decay']:g}; validation accuracy / training accuracy (seeds at validation >= 0.8):",
            "",
        ]
        df = df.assign(mixture=[m if m == op else f"{m} ({op})" for m, op in zip(df.mixture, df.target_op)])
        g = (
            df.assign(ok=df.accuracy_validation >= 0.8)
            .groupby(["mixture", "width"])
            .agg(
                val=("accuracy_validation", "mean"), tr=("accuracy_train", "mean"), k=("ok", "sum"), n=("seed", "size")
            )
            .reset_index()
        )
        widths = sorted(g.width.unique())
        lines += ["| mixture | " + " | ".join(f"width {w}" for w in widths) + " |", "|---|" + "---|" * len(widths)]
        for m, gm in g.groupby("mixture"):
            cells = {int(r.width): f"{r.val:.2f} / {r.tr:.2f} ({r.k}/{r.n})" for r in gm.itertuples()}
            lines.append(f"| {m} | " + " | ".join(cells.get(int(w), "") for w in widths) + " |")
        lines.append("")
    return "\n".join(lines) if lines else "(no pilot committed)"


def residues_block(root: Path) -> str:
    """Per source with a committed residues table (`jointtask residues`): by curve and width, the
    runs that know the answer modulo n, those that know it only modulo a proper divisor (a partial
    solution), and those that know nothing of it."""
    lines = []
    for path in sorted((root / "docs" / "results").glob("*/residues.csv")):
        table = pd.read_csv(path)
        summary = residue_summary(table)
        split = ", ".join(sorted(set(table.split)))
        lines += [
            f"**{path.parent.name}** ({split} prompts): runs by the largest modulus they answer right "
            f"on 90% of the prompts",
            "",
            "| " + " | ".join(summary.columns) + " |",
            "|" + "---|" * len(summary.columns),
            *("| " + " | ".join(str(v) for v in row) + " |" for row in summary.itertuples(index=False)),
            "",
        ]
        frequencies = embedding_summary(table)
        if len(frequencies):
            lines += [
                f"The number embeddings of the {int(frequencies.runs.sum())} of them whose embeddings were "
                "read, by what the runs know: the mean share of their power at the frequencies that tell a "
                "value modulo each prime power of the modulus",
                "",
                "| " + " | ".join(frequencies.columns) + " |",
                "|" + "---|" * len(frequencies.columns),
                *(
                    "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |"
                    for row in frequencies.itertuples(index=False)
                ),
                "",
            ]
    return "\n".join(lines) if lines else "(no residues table committed)"


def records_block(root: Path) -> str:
    """What the committed run records weigh: per source, runs kept, mean size of a run's records
    (config, result, metrics), and the checkpoints kept for the report."""
    lines = ["| source | runs | records per run | checkpoints kept | per checkpoint |", "|---|---|---|---|---|"]
    for d in sorted(p for p in (root / "docs" / "results").iterdir() if (p / "runs").is_dir()):
        runs = [r for r in (d / "runs").iterdir() if r.is_dir()]
        rec = [sum(f.stat().st_size for f in r.iterdir() if f.name != "checkpoint.pt") for r in runs]
        ck = [r / "checkpoint.pt" for r in runs if (r / "checkpoint.pt").exists()]
        per_ck = f"{sum(c.stat().st_size for c in ck) / len(ck) / 1024:.0f} KiB" if ck else ""
        lines.append(f"| {d.name} | {len(runs)} | {sum(rec) / len(rec) / 1024:.1f} KiB | {len(ck)} | {per_ck} |")
    return "\n".join(lines)


def heldout_block(root: Path) -> str:
    """ADD alone at width 12 under the claims' regime: the fixed held-out set (cpu-c2's runs)
    against one drawn per run (heldout-per-run), on validation accuracy."""
    from jointtask.sweep.results import collect

    per_run = root / "docs" / "results" / "heldout-per-run"
    fixed = root / "docs" / "results" / "cpu-c2"
    if not (per_run / "plan.json").exists() or not (fixed / "plan.json").exists():
        return "(not measured yet: run experiments/cpu/heldout-per-run.toml)"
    lines = [
        "| held-out set | runs | validation accuracy, mean | SD over seeds | seeds at >= 0.8 |",
        "|---|---|---|---|---|",
    ]
    for name, d in (("fixed (heldout_seed = 0)", fixed), ('per run (heldout_seed = "run")', per_run)):
        df = collect(d)
        g = df[(df.mixture == "ADD") & (df.width == 12)]
        v = g.accuracy_validation
        lines.append(f"| {name} | {len(g)} | {v.mean():.2f} | {v.std():.2f} | {(v >= 0.8).sum()}/{len(g)} |")
    return "\n".join(lines)


def cohort_block(root: Path) -> str:
    lines = []
    for f in sorted((root / "docs" / "bench").glob("cohort_*.json")):
        res = json.loads(f.read_text())
        m, sizes = res["machine"], sorted(next(iter(res["widths"].values()))["speedup"], key=int)
        lines += [
            f"`jointtask bench --cohort --device {m['device']} --out {f.relative_to(root)}` on {m['name']} "
            f"(torch {m['torch']}, one CPU thread), {res['task']}, {res.get('path', 'eager cohort steps')}; "
            "model-steps per second, and in brackets the speedup over one run trained alone:",
            "",
            "| width | alone | " + " | ".join(f"cohort of {k}" for k in sizes) + " |",
            "|---|---|" + "---|" * len(sizes),
        ]
        for w, r in sorted(res["widths"].items(), key=lambda t: int(t[0])):
            cells = " | ".join(f"{r[k]:.1f} ({r['speedup'][k]:.2f}x)" for k in sizes)
            lines.append(f"| {w} | {r['solo']:.1f} | {cells} |")
        lines.append("")
    return "\n".join(lines) if lines else "(no cohort measurement committed)"


def aa_block(root: Path) -> str:
    """The A/A checks of the committed result tables: isomorphic single ops against each other."""
    from jointtask.analysis.claims import fmt_interval

    lines = [
        "| source | pair | ratio P\\*, 95% interval | verdict | ratio P50, 95% interval | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for f in sorted((root / "docs" / "results").glob("*/ratios.csv")):
        df = pd.read_csv(f)
        if "comparison" not in df:
            continue
        for _, r in df[df.comparison.str.startswith("A/A")].iterrows():
            lines.append(
                f"| {f.parent.name} | {r.baseline_mixture} vs {r.mixture} "
                f"| {fmt_interval(r.ratio, r.ci_low, r.ci_high, kind=r.kind)} | {r.verdict} "
                f"| {fmt_interval(r.p50_ratio, r.p50_ci_low, r.p50_ci_high, kind=r.p50_kind)} | {r.p50_verdict} |"
            )
    return "\n".join(lines) if len(lines) > 2 else "(no committed sweep holds an isomorphic pair)"


def gpu_c2_block(root: Path) -> str:
    lines = []
    for f in sorted((root / "docs" / "bench").glob("gpu_c2_*.json")):
        res = json.loads(f.read_text())
        co, solo = res["cohorts"], res["solo"]
        lines += [
            f"`python scripts/gpu_cohort_c2.py` on {res['device']} ({f.relative_to(root)}): the C2 grid, "
            f"{res['minutes_each']:g} minutes of wall clock for each way, runs finished plus the trained "
            "fraction of unfinished ones:",
            "",
            "| way | command | runs | runs per GPU-hour |",
            "|---|---|---|---|",
            *(
                f"| {way} | `jointtask sweep ... --device {r['command'].split('--device ')[1]}` "
                f"| {r['runs_done']:.1f} | {r['runs_per_gpu_hour']:.0f} |"
                for way, r in (("cohorts", co), ("one process per run", solo))
            ),
            "",
            f"Cohorts over one process per run: {res['speedup']:.2f}x.",
            "",
        ]
    return "\n".join(lines) if lines else "(no GPU measurement committed)"


BLOCKS = {
    ("README.md", "claims"): claims_block,
    ("README.md", "quick"): quick_block,
    ("README.md", "cpu"): cpu_block,
    ("docs/definitions.md", "calibration"): calibration_block,
    ("docs/definitions.md", "aa"): aa_block,
    ("docs/regimes.md", "regimes"): regimes_block,
    ("docs/regimes.md", "pilots"): pilots_block,
    ("docs/regimes.md", "residues"): residues_block,
    ("docs/definitions.md", "records"): records_block,
    ("docs/definitions.md", "heldout"): heldout_block,
    ("docs/performance.md", "throughput"): throughput_block,
    ("docs/performance.md", "cohorts"): cohort_block,
    ("docs/performance.md", "gpu-c2"): gpu_c2_block,
}


def render(root: Path = ROOT) -> dict[Path, str]:
    """Every file with its blocks filled in."""
    out: dict[Path, str] = {}
    for (name, block), fn in BLOCKS.items():
        path = root / name
        text = out.get(path, path.read_text())
        pat = re.compile(f"(<!-- {block}:begin -->\n).*?(<!-- {block}:end -->)", re.S)
        if not pat.search(text):
            raise ValueError(f"{name} has no {block} block")
        body = fn(root).rstrip("\n") + "\n"
        out[path] = pat.sub(lambda m: m.group(1) + body + m.group(2), text)
    return out


def stale(root: Path = ROOT) -> list[str]:
    return [str(p.relative_to(root)) for p, text in render(root).items() if p.read_text() != text]


if __name__ == "__main__":
    if "--write" in sys.argv:
        for p, text in render().items():
            atomic_write_text(p, text)
    bad = stale()
    if bad:
        print("out of date: " + ", ".join(bad), file=sys.stderr)
        sys.exit(1)
