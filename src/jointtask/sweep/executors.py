"""Executors: how the runs of a sweep get trained. One small interface:

    executor.map(work, runs_dir) -> iterator of (run, outcome, exception), in completion order

`work` lists what each worker process trains: a list of groups, each one run, or a cohort of
runs of one shape trained as one computation (placement.cohorts; on one machine the cohorts of a GPU
share one process, placement.one_process_per_device). `local` is a process pool on this machine (one
torch thread per worker); `ray` hands each item of work to a Ray cluster as a task that declares
one CPU (and a whole GPU for cohorts on CUDA), retried a bounded number of times.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
import multiprocessing as mp
from pathlib import Path

from ..errors import UserError
from .worker import die_with_parent, execute_groups


class LocalExecutor:
    local = True  # its workers share this machine's devices

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1

    def map(self, work, runs_dir: Path):
        if not work:
            return
        prepare_data([c for w in work for r in _runs(w) for c in (r.config, r.pretrain and r.pretrain.config) if c])
        # spawn: a fresh interpreter per worker, no forked torch state; workers die with the driver.
        # No more workers than groups: each one starts an interpreter and imports torch.
        workers = min(self.workers, len(work))
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent)
        futures = {pool.submit(execute_groups, _plain(w), str(runs_dir)): w for w in work}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        outcomes = f.result()
                    except BrokenProcessPool as e:
                        outcomes = RuntimeError(f"worker process died: {e}")
                    except Exception as e:
                        outcomes = e
                    yield from _per_run(futures[f], outcomes)
        finally:  # stopped (Ctrl-C, SIGTERM): queued runs are dropped, running ones killed (they resume)
            if pending:
                workers_now = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown clears it
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in workers_now:
                    proc.kill()
            pool.shutdown(wait=True)


def _build_data(cfg) -> None:
    from ..tasks.dataset import build_task_data

    build_task_data(cfg.task, cfg.data, cfg.seed)


def prepare_data(cfgs: list) -> None:
    """With an accelerator, build every run's data first (into the data cache, where each run then
    reads it) over all of this machine's cores: a handful of GPU workers would otherwise build it
    run after run while the cores sit idle (64 runs at modulus 20: minutes). On a CPU the workers
    already keep every core busy."""
    todo = [c for c in cfgs if c.train.device != "cpu"]
    workers = min(len(todo), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent) as pool:
            list(pool.map(_build_data, todo, chunksize=max(1, len(todo) // (4 * workers))))


def _plain(groups) -> list[list[dict]]:
    return [[r.model_dump(mode="json") for r in g] for g in groups]


def _runs(groups) -> list:
    return [r for g in groups for r in g]


def _per_run(groups, outcomes):
    """(run, outcome, None) for each run of some groups, or (run, None, exception) when they failed."""
    for i, run in enumerate(_runs(groups)):
        if isinstance(outcomes, BaseException):
            yield run, None, outcomes
        else:
            yield run, outcomes[i], None


def _ray_env() -> None:
    # Only with this set does every Ray process bind loopback on this kind of machine.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class RayExecutor:
    """Runs on an existing cluster (`address`, e.g. 127.0.0.1:6379) or starts a local one."""

    max_retries = 2

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address, self.workers = address, workers

    def map(self, work, runs_dir: Path):
        if not work:
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
            refs = {}
            for w in work:
                cohort_on_gpu = any(len(g) > 1 and g[0].config.train.device.startswith("cuda") for g in w)
                refs[task.options(num_gpus=1 if cohort_on_gpu else 0).remote(_plain(w), str(runs_dir))] = w
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        outcomes = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # pyright: ignore[reportAttributeAccessIssue]
                        outcomes = e.cause if e.cause is not None else e
                    except Exception as e:
                        outcomes = e
                    yield from _per_run(refs[ref], outcomes)
        finally:
            ray.shutdown()


def _ray_execute(groups: list[list[dict]], runs_dir: str) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    return execute_groups(groups, runs_dir, ship_files=True)  # the driver may not share this disk


def make_executor(backend: str, workers: int | None = None, address: str | None = None):
    """The executor a sweep runs on; its arguments are checked here, before any work."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if backend == "local":
        if address:
            raise UserError("--address is for the ray backend")
        return LocalExecutor(workers)
    if backend == "ray":
        return RayExecutor(address, workers)
    raise UserError(f"unknown backend {backend!r} (local or ray)")
