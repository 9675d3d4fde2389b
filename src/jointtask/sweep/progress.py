"""Live view of a sweep: runs done of total, the runs in progress, an estimate of time left.
A rich display on a terminal; one plain line per finished run otherwise."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from ..train import run_dir


class SweepProgress:
    def __init__(self, workers: int, stream=None):
        self.workers = max(1, workers)
        self.stream = stream or sys.stderr
        self.live = None

    def start(self, runs, runs_dir: Path):
        self.runs_dir = runs_dir
        self.total = len(runs)
        self.todo = {r.run_id: r for r in runs if run_dir.state(runs_dir / r.run_id) != "done"}
        self.finished = self.total - len(self.todo)
        self.failed = 0
        self.t0 = time.time()
        self.completed = 0  # runs ended since this start, for the estimate of time left
        if self.stream.isatty():
            from rich.live import Live

            self.live = Live(self._render(), refresh_per_second=2, transient=False)
            self.live.start()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._refresh, daemon=True)
            self._thread.start()
        else:
            print(f"sweep: {self.total} runs, {self.finished} already done", file=self.stream, flush=True)

    def _eta(self) -> str:
        if not self.completed or not self.todo:
            return "?" if self.todo else "0s"
        per_run = (time.time() - self.t0) / self.completed
        return f"{per_run * len(self.todo):.0f}s"

    def _render(self):
        from rich.table import Table

        t = Table(title=f"sweep: {self.finished}/{self.total} done, {self.failed} failed, about {self._eta()} left")
        for col in ("run", "mixture", "width", "seed", "step"):
            t.add_column(col)
        shown = 0
        for rid, r in self.todo.items():
            step = run_dir.progress(self.runs_dir / rid)
            if step and shown < 8:
                t.add_row(rid, r.mixture, str(r.width), str(r.seed), f"{step}/{r.config.train.steps}")
                shown += 1
        return t

    def _refresh(self):
        while not self._stop.wait(1.0):
            if self.live is not None:
                self.live.update(self._render())

    def update(self, run, exc):
        self.todo.pop(run.run_id, None)
        self.completed += 1
        if exc is None:
            self.finished += 1
        else:
            self.failed += 1
        if self.live:
            self.live.update(self._render())
        else:
            what = "done" if exc is None else f"FAILED ({exc})"
            print(
                f"[{self.finished + self.failed}/{self.total}] {what}: {run.mixture} width {run.width} "
                f"seed {run.seed} ({run.run_id}); about {self._eta()} left",
                file=self.stream,
                flush=True,
            )

    def stop(self):
        if self.live:
            self._stop.set()
            self.live.update(self._render())
            self.live.stop()
