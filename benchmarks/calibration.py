"""Calibration of the transition estimator at the designs the claims rest on (the widths and
seeds of an experiment file, or its widths with more seeds): interval coverage, A/A false
verdicts, how often a design decides "no benefit", and power against planted ratios. Writes
src/jointtask/presets/calibration.json (rows of the designs run replace those designs' rows); `--markdown`
prints the table docs/definitions.md holds.

    python benchmarks/calibration.py [--designs wide,cpu] [--reps 100] [--ratios 1,2,3,4,6] [--workers N]
    python benchmarks/calibration.py --designs wide-16,wide-32 --reps 60 --ratios 1,2,3   (the rows held)
    python benchmarks/calibration.py --designs dense,dense-16,dense-32 --reps 60 --ratios 1,2,3 --workers 3
    python benchmarks/calibration.py --markdown src/jointtask/presets/calibration.json   (the table only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from jointtask.analysis.calibration import calibrate, design_of
from jointtask.analysis.transition import N_BOOT
from jointtask.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from docs_blocks import calibration_block  # noqa: E402  (the repository's upkeep scripts)

DESIGNS = {  # name: the experiment whose widths are planted, its seeds (None: the experiment's), and
    # the factor around the design's middle size within which transitions are planted
    "wide": ("experiments/strict/quick.toml", None, 3.0),
    "cpu": ("experiments/strict/c1.toml", None, 3.0),
    # those widths (about 1.5x apart) with more seeds: what a verdict at this spacing would take
    "wide-16": ("experiments/strict/quick.toml", 16, 3.0),
    "wide-32": ("experiments/strict/quick.toml", 32, 3.0),
    # a dense design: widths about 1.2x apart (benchmarks/designs/dense.toml), placed around
    # a transition a pilot located (planted within 1.5x of its middle), where "no benefit" can be decided
    "dense": ("benchmarks/designs/dense.toml", None, 1.5),
    "dense-16": ("benchmarks/designs/dense.toml", 16, 1.5),
    "dense-32": ("benchmarks/designs/dense.toml", 32, 1.5),
}
RATIOS = (1.0, 2.0, 3.0, 4.0, 6.0)


def _rows(design: str, reps: int, n_boot: int, ratios: tuple[float, ...]) -> list[dict]:
    experiment, seeds, spread = DESIGNS[design]
    sizes, own_seeds = design_of(ROOT / experiment)
    rows = calibrate(reps, n_boot, sizes, seeds or own_seeds, ratios=ratios, spread=spread)
    return [{"design": design, "experiment": experiment, **r} for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated, of {', '.join(DESIGNS)}")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=N_BOOT)
    ap.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS), help="planted ratios, comma-separated")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (one design each)")
    ap.add_argument("--out", default="src/jointtask/presets/calibration.json")
    ap.add_argument("--markdown", help="print the table for this JSON and exit")
    a = ap.parse_args()
    if a.markdown:
        print(calibration_block(ROOT, Path(a.markdown)))
        return
    designs = [d.strip() for d in a.designs.split(",")]
    unknown = sorted(set(designs) - set(DESIGNS))
    if unknown:
        ap.error(f"unknown design(s) {', '.join(unknown)}; have {', '.join(DESIGNS)}")
    try:
        ratios = tuple(float(r) for r in a.ratios.split(","))
    except ValueError:
        ap.error(f"--ratios takes numbers separated by commas, not {a.ratios!r}")
    with ProcessPoolExecutor(a.workers) as pool:  # one design per task
        rows = [r for f in [pool.submit(_rows, d, a.reps, a.n_boot, ratios) for d in designs] for r in f.result()]
    out = Path(a.out)
    kept = json.loads(out.read_text())["rows"] if out.exists() else []
    kept = [r for r in kept if r.get("design") in DESIGNS and r["design"] not in designs]
    order = list(DESIGNS)
    rows = sorted(kept + rows, key=lambda r: (order.index(r["design"]), r["ratio"]))
    atomic_write_json(out, {"rows": rows})
    print(calibration_block(ROOT, out))


if __name__ == "__main__":
    main()
