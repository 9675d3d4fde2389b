"""Merge sweep directory B into A (runs trained on different devices of one machine: run ids
leave the device out, so the merged plan is the experiment's plan). Usage: merge_sweeps.py A B"""

import json
import shutil
import sys
from pathlib import Path

from jointtask.fileio import atomic_write_json

a, b = Path(sys.argv[1]), Path(sys.argv[2])
for run in (b / "runs").iterdir():
    if not (a / "runs" / run.name).exists():
        shutil.copytree(run, a / "runs" / run.name)
plan = json.loads((a / "plan.json").read_text())
have = {p["run_id"] for p in plan}
atomic_write_json(
    a / "plan.json", plan + [p for p in json.loads((b / "plan.json").read_text()) if p["run_id"] not in have]
)
