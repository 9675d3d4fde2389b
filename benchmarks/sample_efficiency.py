"""Sample efficiency: training tokens a width-32 model needs to reach 80% validation ADD accuracy (expressions unseen up to argument order)
(ADD mod 10, chain of thought, no nesting), jointtask's recipe against the baseline recipe of the
same research group's public code (AdamW lr 5e-4 decaying exponentially to 2e-5, clipping 1.0,
batch 64 x 128-token packed windows, loss on all tokens).

    python benchmarks/sample_efficiency.py --out docs/bench/sample_efficiency.json

The baseline gets `budget_factor` (default 3) times the tokens jointtask needed; if it does not
reach 80% within them, its need is reported as a lower bound (> budget).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from jointtask.fileio import atomic_write_json, read_jsonl
from jointtask.train.config import config_from_dict
from jointtask.train.loop import train_run

TASK = {"ops": ["ADD"], "modulus": 10, "max_depth": 1}
DATA = {"per_n": 2000, "eval_count": 400, "eval_train_count": 100}


def tokens_to(metrics: list[dict], level: float) -> int | None:
    for row in metrics:
        if row["accuracy_validation"]["ADD"] >= level:
            return row["tokens_seen"]
    return None


def run(train: dict, width: int, seed: int, work: Path) -> list[dict]:
    cfg = config_from_dict({"seed": seed, "task": TASK, "data": DATA, "model": {"width": width}, "train": train})
    out = work / cfg.run_id()
    if out.exists():
        shutil.rmtree(out)
    train_run(cfg, out, quiet=True)
    return read_jsonl(out / "metrics.jsonl")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-factor", type=float, default=3.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jt-sample-eff-"))
    ours_train = {
        "steps": 3000,
        "batch_size": 256,
        "lr": 2e-3,
        "weight_decay": 0.1,
        "eval_every": 100,
        "checkpoint_every": 3000,
        "early_stop": True,
        "ceiling": 0.95,
    }
    ours = run(ours_train, args.width, args.seed, work)
    t_ours = tokens_to(ours, 0.8)
    if t_ours is None:
        raise SystemExit("jointtask's recipe did not reach 80% at this width; choose another width")
    budget = int(args.budget_factor * t_ours)
    steps = -(-budget // (64 * 128))
    base_train = {
        "steps": steps,
        "batch_size": 64,
        "lr": 5e-4,
        "final_lr": 2e-5,
        "schedule": "exponential",
        "weight_decay": 0.1,
        "grad_clip": 1.0,
        "packing": "windows",
        "window": 128,
        "loss_on": "all",
        "eval_every": max(1, steps // 12),
        "checkpoint_every": steps,
        "early_stop": True,
        "ceiling": 0.95,
    }
    base = run(base_train, args.width, args.seed, work)
    t_base = tokens_to(base, 0.8)
    res = {
        "task": "ADD mod 10, depth 1 (2-3 arguments), chain of thought",
        "width": args.width,
        "seed": args.seed,
        "level": 0.8,
        "ours": {
            "recipe": ours_train,
            "tokens_to_level": t_ours,
            "curve": [(r["tokens_seen"], r["accuracy_validation"]["ADD"]) for r in ours],
        },
        "baseline": {
            "recipe": base_train,
            "tokens_to_level": t_base,
            "budget_tokens": steps * 64 * 128,
            "curve": [(r["tokens_seen"], r["accuracy_validation"]["ADD"]) for r in base],
        },
        "ratio": (t_base / t_ours) if t_base else None,
        "ratio_lower_bound": None if t_base else steps * 64 * 128 / t_ours,
    }
    atomic_write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k not in ("ours", "baseline")}, indent=1))
    print("ours tokens to 80%:", t_ours, " baseline:", t_base or f"> {steps * 64 * 128}")


if __name__ == "__main__":
    main()
