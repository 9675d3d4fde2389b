"""Calibration of the transition estimator at the default design (6 log-spaced widths over two
decades of parameters, 8 seeds): interval coverage, A/A false verdicts, and power against planted
ratios. Writes docs/bench/calibration.json; `--markdown` prints the table docs/statistics.md holds.

    python benchmarks/calibration.py [--reps 200] [--out docs/bench/calibration.json]
    python benchmarks/calibration.py --markdown docs/bench/calibration.json
"""

from __future__ import annotations

import argparse
import json

from jointtask.analysis.calibration import calibrate
from jointtask.fileio import atomic_write_json

RATIOS = (1.0, 1.5, 2.0, 3.0, 4.0)


def markdown(res: dict) -> str:
    rows = res["rows"]
    lines = [f"Design: {rows[0]['widths']} log-spaced widths over two decades of parameters, {rows[0]['seeds']} seeds; "
             f"{rows[0]['reps']} planted pairs per row, {rows[0]['n_boot']} bootstrap replicates per fit.", "",
             "| planted ratio | P* interval covers the truth | P50 interval covers the truth | P* verdict benefit | P* verdict harm | P50 verdict benefit | P50 verdict harm |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ratio']:g} | {r['pstar_covered']:.0%} | {r['p50_covered']:.0%} | {r['benefit']:.0%} | "
                     f"{r['harm']:.0%} | {r['p50_benefit']:.0%} | {r['p50_harm']:.0%} |")
    power = [r["ratio"] for r in rows if r["ratio"] > 1 and r["benefit"] >= 0.8]
    power50 = [r["ratio"] for r in rows if r["ratio"] > 1 and r["p50_benefit"] >= 0.8]
    lines += ["", f"Smallest planted ratio called a benefit with at least 80% power: P* {min(power) if power else 'none'}"
                  f"x, P50 {min(power50) if power50 else 'none'}x (of {', '.join(f'{r:g}' for r in RATIOS[1:])})."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--out", default="docs/bench/calibration.json")
    ap.add_argument("--markdown", help="print the table for this JSON and exit")
    a = ap.parse_args()
    if a.markdown:
        print(markdown(json.load(open(a.markdown))))
        return
    res = {"rows": [calibrate(a.reps, a.n_boot, ratio=r) for r in RATIOS]}
    atomic_write_json(a.out, res)
    print(markdown(res))


if __name__ == "__main__":
    main()
