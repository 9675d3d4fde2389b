"""Where and when runs train: runs in rounds of seeds, runs of one shape grouped into cohorts, and
a GPU's cohorts in one process."""

from __future__ import annotations

from .experiment import PlannedRun


def in_rounds(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs in rounds: every curve (a mixture's runs at one width) gets its first seed left to
    train before any gets its second, and so on, in plan order within a round. A sweep stopped
    part-way then holds every curve at its whole grid of widths with fewer seeds, which its report
    can already read, rather than some curves whole and the others not started."""
    seeds: dict[tuple[str, int], list[int]] = {}
    for r in runs:
        seeds.setdefault((r.mixture, r.width), []).append(r.seed)
    rank = {k: {s: i for i, s in enumerate(sorted(v))} for k, v in seeds.items()}
    order = sorted(range(len(runs)), key=lambda i: (rank[(runs[i].mixture, runs[i].width)][runs[i].seed], i))
    return [runs[i] for i in order]


def cohorts(runs: list[PlannedRun], size: int) -> tuple[list[list[PlannedRun]], list[str]]:
    """Runs grouped into cohorts of at most `size` runs of one shape (size 1: each run alone),
    each cohort shrunk to what fits the device; and a line per shape saying the size chosen."""
    if size <= 1:
        return [[r] for r in runs], []
    from ..train.cohort import fit_cohort_size, shape_of

    by_shape: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        by_shape.setdefault(shape_of(r.config), []).append(r)
    groups, notes = [], []
    for group in by_shape.values():
        k, why = fit_cohort_size(group[0].config, size)
        notes.append(f"width {group[0].width}: {why}")
        groups += [group[i : i + k] for i in range(0, len(group), k)]
    return groups, notes


def one_process_per_device(
    groups: list[list[PlannedRun]], free_bytes: int | None = None
) -> list[list[list[PlannedRun]]]:
    """What each worker process trains: the cohorts on one CUDA device together in one process
    (taking steps in turn on their own streams, the GPU overlaps them; processes would share it
    by time slices), as many at a time as fit half the device's free memory; every other group
    in a process of its own."""
    from ..train.cohort import free_memory, run_memory

    per_device: dict[str, list[list[list[PlannedRun]]]] = {}
    alone, used, budget = [], {}, {}
    for g in groups:
        device = g[0].config.train.device
        if len(g) > 1 and device.startswith("cuda"):
            units = per_device.setdefault(device, [])
            if device not in budget:
                budget[device] = (free_memory(device) if free_bytes is None else free_bytes) // 2
            need = sum(run_memory(r.config) for r in g)
            if not units or used[device] + need > budget[device]:
                units.append([])
                used[device] = 0
            units[-1].append(g)
            used[device] += need
        else:
            alone.append([g])
    return [u for units in per_device.values() for u in units] + alone


def default_cohort_size(device: str) -> int:
    """Cohorts pay where one model leaves the device idle (a GPU); on a CPU they do not
    (docs/performance.md), so each run trains alone there."""
    return 64 if device.startswith("cuda") else 1
