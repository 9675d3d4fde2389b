"""Executors: how the runs of a sweep get trained. One small interface:

    executor.map(runs, runs_dir) -> iterator of (run, outcome, exception), in completion order

`local` is a process pool on this machine (one torch thread per worker); `ray` hands the runs
to a Ray cluster as tasks that each declare one CPU and are retried a bounded number of times.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
import multiprocessing as mp
from pathlib import Path

from ..errors import UserError
from .runner import die_with_parent, execute_run


class LocalExecutor:
    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1

    def map(self, runs, runs_dir: Path):
        if not runs:
            return
        # spawn: a fresh interpreter per worker, no forked torch state; workers die with the driver.
        # No more workers than runs: each one starts an interpreter and imports torch.
        workers = min(self.workers, len(runs))
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent) as pool:
            futures = {pool.submit(execute_run, r.model_dump(mode="json"), str(runs_dir)): r for r in runs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        yield futures[f], f.result(), None
                    except BrokenProcessPool as e:
                        yield futures[f], None, RuntimeError(f"worker process died: {e}")
                    except Exception as e:
                        yield futures[f], None, e


def _ray_env() -> None:
    # Only with this set does every Ray process bind loopback on this kind of machine.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class RayExecutor:
    """Runs on an existing cluster (`address`, e.g. 127.0.0.1:6379) or starts a local one."""

    max_retries = 2

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address, self.workers = address, workers

    def map(self, runs, runs_dir: Path):
        if not runs:
            return
        _ray_env()
        try:
            import ray
        except ImportError:
            raise UserError("the ray backend needs Ray: pip install 'jointtask[ray]'") from None
        if self.address:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except Exception as e:
                raise UserError(
                    f"cannot connect to the Ray cluster at {self.address}: {e} (a cluster started with "
                    "token authentication needs the same RAY_AUTH_MODE and token here)"
                ) from None
        else:
            ray.init(
                num_cpus=self.workers or os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        try:
            task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=True)(_ray_execute)
            refs = {task.remote(r.model_dump(mode="json"), str(runs_dir)): r for r in runs}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield refs[ref], ray.get(ref), None
                    except ray.exceptions.RayTaskError as e:  # pyright: ignore[reportAttributeAccessIssue]
                        yield refs[ref], None, e.cause if e.cause is not None else e
                    except Exception as e:
                        yield refs[ref], None, e
        finally:
            ray.shutdown()


def _ray_execute(run: dict, runs_dir: str) -> dict:
    import torch

    torch.set_num_threads(1)
    return execute_run(run, runs_dir, ship_files=True)  # the driver may not share this disk


def make_executor(backend: str, workers: int | None = None, address: str | None = None):
    if backend == "local":
        if address:
            raise UserError("--address is for the ray backend")
        return LocalExecutor(workers)
    if backend == "ray":
        return RayExecutor(address, workers)
    raise UserError(f"unknown backend {backend!r} (local or ray)")
