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

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UserError
from ..fileio import atomic_write_json, read_jsonl

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
    stop_reason: str  # "budget", "ceiling" or "plateau"
    final_loss: float
    accuracy: dict[str, float]
    accuracy_validation: dict[str, float]
    accuracy_train: dict[str, float]
    test_expressions: dict[str, ExpressionCount]
    modulus: Optional[int] = None
    degree: Optional[int] = None
    device: str


def transfer_run_id(run_id: str, init_from_id: str) -> str:
    return f"{run_id[:8]}{init_from_id[:8]}"


def read_result(run_dir: Path) -> RunResult | None:
    """The run's record when it is a valid one, else None (not finished, or unreadable)."""
    try:
        return RunResult.model_validate_json((Path(run_dir) / RESULT).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


def write_result(run_dir: Path, result: RunResult) -> None:
    atomic_write_json(Path(run_dir) / RESULT, result.model_dump(mode="json"))  # last: the run is finished


def state(run_dir: Path) -> State:
    if (run_dir / RESULT).exists():
        return "done" if read_result(run_dir) is not None else "corrupt"
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
