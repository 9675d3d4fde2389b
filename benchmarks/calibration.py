"""Calibration of the transition estimator at the default design (6 log-spaced widths over two
decades of parameters, 8 seeds): interval coverage, A/A false verdicts, and power against planted
ratios. Writes docs/bench/calibration.json; `--markdown` prints the table docs/definitions.md holds.

    python benchmarks/calibration.py [--reps 100] [--workers N] [--out docs/bench/calibration.json]
    python benchmarks/calibration.py --markdown docs/bench/calibration.json   (the table only)
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from jointtask.analysis.calibration import calibrate
from jointtask.analysis.transition import N_BOOT
from jointtask.fileio import atomic_write_json
from jointtask.report.blocks import calibration_block

RATIOS = (1.0, 2.0, 3.0, 4.0, 6.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=N_BOOT)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (one planted ratio each)")
    ap.add_argument("--out", default="docs/bench/calibration.json")
    ap.add_argument("--markdown", help="print the table for this JSON and exit")
    a = ap.parse_args()
    if a.markdown:
        print(calibration_block(Path(a.markdown).resolve().parents[2]))
        return
    with ProcessPoolExecutor(a.workers) as pool:  # one planted ratio per task
        futures = [pool.submit(calibrate, a.reps, a.n_boot, ratio=r) for r in RATIOS]
        res = {"rows": [f.result() for f in futures]}
    atomic_write_json(a.out, res)
    print(calibration_block(Path(a.out).resolve().parents[2]))


if __name__ == "__main__":
    main()
