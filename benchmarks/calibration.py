"""Calibration of the transition estimator at the default design (6 log-spaced widths over two
decades of parameters, 8 seeds): interval coverage, A/A false verdicts, and power against planted
ratios. Writes docs/bench/calibration.json; `--markdown` prints the table docs/definitions.md holds.

    python benchmarks/calibration.py [--reps 100] [--out docs/bench/calibration.json]
    python benchmarks/calibration.py --markdown docs/bench/calibration.json   (the table only)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jointtask.analysis.calibration import calibrate
from jointtask.fileio import atomic_write_json
from jointtask.report.blocks import calibration_block

RATIOS = (1.0, 2.0, 3.0, 4.0, 6.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--out", default="docs/bench/calibration.json")
    ap.add_argument("--markdown", help="print the table for this JSON and exit")
    a = ap.parse_args()
    if a.markdown:
        print(calibration_block(Path(a.markdown).resolve().parents[2]))
        return
    res = {"rows": [calibrate(a.reps, a.n_boot, ratio=r) for r in RATIOS]}
    atomic_write_json(a.out, res)
    print(calibration_block(Path(a.out).resolve().parents[2]))


if __name__ == "__main__":
    main()
