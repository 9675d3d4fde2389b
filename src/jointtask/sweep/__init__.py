"""Sweeps: mixtures x widths x seeds, on local processes or a Ray cluster, resumable."""

from .executors import LocalExecutor, RayExecutor, make_executor
from .experiment import Experiment, PlannedRun, load_experiment, plan
from .results import collect, status
from .runner import run_sweep

__all__ = [
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "Experiment",
    "PlannedRun",
    "load_experiment",
    "plan",
    "collect",
    "status",
    "run_sweep",
]
