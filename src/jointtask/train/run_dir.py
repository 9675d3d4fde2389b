"""A run directory: its files, its states, and the typed record of a finished run.

    runs/<run_id>/
      config.toml      the resolved run config (written first; a changed config is refused)
      checkpoint.pt    model, optimiser and loop state; the run resumes from it exactly
      metrics.jsonl    one line per evaluation: step, tokens, loss, lr, validation accuracy
      result.json      the RunResult, written last and atomically: the run is finished
      error.json       the last failure of the run (sweeps), cleared by the next attempt
      .lock            held while a process trains the run

A transferred run (started from another run's weights) is named by the hashes of its own config
and of the run it starts from (`transfer_run_id`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import UserError
from ..fileio import atomic_write_bytes, atomic_write_json, read_jsonl

CONFIG = "config.toml"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"
ERROR = "error.json"
LOCK = ".lock"

State = Literal["done", "corrupt", "failed", "started", "pending"]


class ExpressionCount(BaseModel):
    scored: int  # distinct test expressions the run was scored on
    exist: Optional[int]  # distinct test expressions of the op in the split (None: not enumerated)
    steps_seen: Optional[float] = None  # share of their atomic steps (up to argument order) in training


class RunResult(BaseModel):
    """result.json. Accuracies are per op; `accuracy` is on the test split, read once by the final
    model; `accuracy_validation` is what early stopping watched; `accuracy_train` is on expressions
    the run trained on."""

    model_config = ConfigDict(extra="ignore")  # records from older versions carry more keys

    run_id: str
    mixture: str  # the ops trained, joined by '+'
    ops: list[str]
    seed: int
    init_from: Optional[str] = None  # the run whose weights started this one (transfer)
    width: int
    heads: int
    recurrence: int
    blocks: int
    params: int
    params_non_embedding: int
    steps: int
    tokens_seen: int
    train_seconds: float
    stop_reason: str  # "budget", "ceiling", "plateau" or "diverged" (a non-finite loss; no accuracy scored)
    final_loss: Optional[float]
    accuracy: dict[str, float]
    accuracy_validation: dict[str, float]
    accuracy_train: dict[str, float]
    test_expressions: dict[str, ExpressionCount]
    still_improving: dict[str, bool] = {}  # per op: validation accuracy still rising when the budget ran out
    protocol: str = "strict"  # the split protocol (records written before protocols existed are strict)

    @model_validator(mode="after")
    def _in_range(self):
        for name in ("accuracy", "accuracy_validation", "accuracy_train"):
            for op, v in getattr(self, name).items():
                if not 0.0 <= v <= 1.0:  # NaN fails too
                    raise ValueError(f"{name}[{op}] = {v} is not an accuracy")
        if self.params <= 0 or self.width <= 0 or self.steps < 0 or self.seed < 0:
            raise ValueError("params, width, steps or seed out of range")
        return self

    modulus: Optional[int] = None
    degree: Optional[int] = None
    device: str


IMPROVING_DELTA = 0.05  # docs/definitions.md, "Runs whose budget ran out"


def still_improving(rows: list[dict], budget_steps: int, stop_reason: str) -> dict[str, bool]:
    """Per op, whether a run stopped by its step budget was still learning: its best validation
    accuracy over the last fifth of the budget exceeds its best before that by IMPROVING_DELTA or
    more. A run stopped early (ceiling, plateau) had finished. `rows` are metrics.jsonl's."""
    evals = [r for r in rows if isinstance(r.get("accuracy_validation"), dict) and isinstance(r.get("step"), int)]
    ops = {op for r in evals for op in r["accuracy_validation"]}
    cut = 0.8 * budget_steps
    out = {}
    for op in sorted(ops):
        early = [r["accuracy_validation"][op] for r in evals if r["step"] <= cut and op in r["accuracy_validation"]]
        late = [r["accuracy_validation"][op] for r in evals if r["step"] > cut and op in r["accuracy_validation"]]
        out[op] = bool(stop_reason == "budget" and early and late and max(late) - max(early) >= IMPROVING_DELTA)
    return out


def transfer_run_id(run_id: str, init_from_id: str) -> str:
    return f"{run_id[:8]}{init_from_id[:8]}"


def read_result(run_dir: Path, run_id: str | None = None) -> RunResult | None:
    """The run's record when it is a valid one, else None (not finished, unreadable, a field out
    of range, or, given `run_id`, the record of another run)."""
    try:
        r = RunResult.model_validate_json((Path(run_dir) / RESULT).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None
    return r if run_id is None or r.run_id == run_id else None


def write_result(run_dir: Path, result: RunResult) -> None:
    atomic_write_json(Path(run_dir) / RESULT, result.model_dump(mode="json"))  # last: the run is finished


RECORD_FILES = (CONFIG, METRICS, RESULT)  # what a finished run's numbers are read from; result.json last


def copy_record(src: Path, dst: Path, checkpoint: bool = False) -> None:
    """Copy a finished run's record (and its checkpoint, when asked and present) from `src` to
    `dst`, each file atomically and result.json last, so that `dst` is finished only once whole. A
    checkpoint that `dst` holds from an unfinished attempt is removed: the record supersedes it."""
    src, dst = Path(src), Path(dst)
    names = [CONFIG, METRICS] + ([CHECKPOINT] if checkpoint and (src / CHECKPOINT).exists() else []) + [RESULT]
    if CHECKPOINT not in names:
        (dst / CHECKPOINT).unlink(missing_ok=True)
    for name in names:
        atomic_write_bytes(dst / name, (src / name).read_bytes())


def state(run_dir: Path, run_id: str | None = None) -> State:
    """Where a run stands; given `run_id`, a record naming another run is 'corrupt'."""
    if (run_dir / RESULT).exists():
        return "done" if read_result(run_dir, run_id) is not None else "corrupt"
    if (run_dir / ERROR).exists():
        return "failed"
    if (run_dir / CHECKPOINT).exists() or (run_dir / METRICS).exists():
        return "started"
    return "pending"


def progress(run_dir: Path) -> int:
    """The last evaluated step."""
    rows = read_jsonl(run_dir / METRICS)
    return rows[-1].get("step", 0) if rows else 0


def quarantine(run_dir: Path, name: str = RESULT) -> None:
    """Move an unreadable record aside (kept for inspection), so that the run is recomputed."""
    f = run_dir / name
    if f.exists():
        os.replace(f, run_dir / f"{name}.corrupt-{int(time.time())}")


def record_failure(run_dir: Path, exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    atomic_write_json(
        run_dir / ERROR,
        {"error": msg, "traceback": "".join(traceback.format_exception(exc))[-4000:], "time": time.time()},
    )
    return msg


def read_failure(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / ERROR).read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return "(unreadable error.json)"


@contextmanager
def locked(path: Path, blocking: bool = True):
    """An exclusive lock on `path` (created if need be) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(f"{path.parent} is in use by another process") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
