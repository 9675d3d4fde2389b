"""Command line: `jointtask data | train | sweep | results | status | transition | ratios | claims | analyze |
residues | export | bench | reproduce | compat`.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .analysis.transition import N_BOOT
from .errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Joint task training of small looped transformers: tasks, runs, sweeps, analysis.",
)


@app.command()
def data(
    ops: str = typer.Option(..., help="operations, comma separated, e.g. ADD,MAX"),
    count: int = typer.Option(100, help="samples to write"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., help="JSON lines file to write"),
    modulus: Optional[int] = typer.Option(None, help="modulus n (ListOps family)"),
    degree: Optional[int] = typer.Option(None, help="k of S_k (permutation family)"),
    max_depth: int = typer.Option(2, help="nesting levels, the root counting as one"),
    split: str = typer.Option("train", help="train, validation or test"),
    protocol: str = typer.Option("paper", help="split protocol: paper (held-out ordered tuples) or strict"),
    test_fraction: float = typer.Option(
        0.2, help="strict: share of expressions in test; paper: test's share of held-out tuples"
    ),
    validation_fraction: float = typer.Option(0.1, help="strict: share of expressions in validation"),
    heldout_rate: float = typer.Option(0.05, help="paper: held-out tuples drawn, as a share of n ** max_args"),
    heldout_seed: int = typer.Option(0, help="paper: seed of the held-out draw"),
    unique: bool = typer.Option(False, help="distinct expressions only (paper: as written; strict: up to symmetry)"),
):
    """Write generated samples (tokens, prompt, answer, op) as JSON lines."""
    from .fileio import atomic_write_text
    from .tasks.dataset import generate
    from .tasks.config import DataConfig, TaskConfig, check_protocol, parse_ops

    task = _validated(TaskConfig, ops=parse_ops(ops), modulus=modulus, degree=degree, max_depth=max_depth)
    rule = _validated(
        DataConfig,
        protocol=protocol,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        heldout_rate=heldout_rate,
        heldout_seed=heldout_seed,
    )
    check_protocol(task, rule)
    _writable(out)
    samples = generate(task, count, seed, split, rule, unique=unique)
    atomic_write_text(out, "".join(json.dumps(s.to_record()) + "\n" for s in samples))
    typer.echo(f"wrote {len(samples)} samples to {out}", err=True)


@app.command()
def train(
    config: Path = typer.Argument(..., help="TOML config"),
    out: Path = typer.Option(..., help="run directory"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set model.width=64"),
    resume: bool = typer.Option(False, help="continue from the run directory's checkpoint"),
    stop_after: Optional[int] = typer.Option(None, help="checkpoint and stop after this step (for testing resume)"),
    init_from: Optional[Path] = typer.Option(None, help="start from another run's weights (transfer)"),
    quiet: bool = typer.Option(False),
):
    """Train one run; prints its result.json."""
    from .train.config import load_config

    cfg = load_config(config, set_)  # before torch is imported: a bad config fails fast
    if stop_after is not None and stop_after < 1:
        raise UserError(f"--stop-after must be >= 1, got {stop_after}")
    from .train.loop import check_fits, train_run

    check_fits(cfg)
    result = train_run(cfg, out, resume=resume, stop_after=stop_after, quiet=quiet, init_from=init_from)
    if result is None:
        typer.echo(f"stopped after step {stop_after}; continue with --resume", err=True)
        return
    typer.echo(result.model_dump_json(indent=2))
    if result.stop_reason == "diverged":
        typer.echo(f"the run diverged (non-finite loss) at step {result.steps}; recorded as diverged", err=True)
        raise typer.Exit(1)


def _check_reuse(dirs: List[Path], out: Path) -> None:
    for d in dirs:
        if not (d / "runs").is_dir():
            raise UserError(f"--reuse {str(d)!r} holds no runs/ directory (a sweep or records directory)")
        if d.resolve() == out.resolve():
            raise UserError(f"--reuse {str(d)!r} is --out itself")


@app.command()
def sweep(
    experiment: Path = typer.Argument(..., help="experiment TOML (see experiments/)"),
    out: Path = typer.Option(..., help="sweep directory"),
    backend: str = typer.Option("local", help="local or ray"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT (ray backend)"),
    workers: Optional[int] = typer.Option(
        None, help="parallel processes (default: one per core); on CUDA the cohorts of a GPU share one"
    ),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set base.train.steps=100"),
    adaptive: bool = typer.Option(False, help="locate each transition with an adaptive width search"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (sets base.train.device)"),
    replan: bool = typer.Option(
        False,
        help="OUT holds another experiment: start a new plan there (old runs are kept on disk but no longer collected)",
    ),
    cohort_size: Optional[int] = typer.Option(
        None, help="train up to K runs of one shape as one computation (default: 64 on CUDA, 1 elsewhere)"
    ),
    reuse: List[Path] = typer.Option(
        [], help="a sweep or records directory whose finished runs are copied in instead of trained (repeatable)"
    ),
    train: bool = typer.Option(
        True,
        help="--no-train: write the plan and copy in the runs --reuse holds, train nothing (runs shared with another experiment)",
    ),
    only: List[str] = typer.Option(
        [], help="train only this mixture's runs now, the rest of the plan later (repeatable), e.g. --only ADD+PROD"
    ),
):
    """Run (or resume) every run of an experiment; exits 1 if any run failed."""
    from .sweep.experiment import load_experiment

    exp = load_experiment(experiment, _with_device(set_, device))  # before torch is imported: fails fast
    _check_reuse(reuse, out)
    if cohort_size is not None and cohort_size < 1:
        raise UserError(f"--cohort-size must be >= 1, got {cohort_size}")
    if adaptive and not train:
        raise UserError("--adaptive places widths by training them; it cannot be used with --no-train")
    if adaptive and only:
        raise UserError("--adaptive places widths by training every curve; it cannot be used with --only")
    from .sweep.executors import make_executor
    from .sweep.progress import SweepProgress
    from .sweep.runner import run_sweep

    executor = make_executor(backend, workers, address)
    _check_out_dir(out)
    progress = SweepProgress(getattr(executor, "workers", None) or 1)
    if adaptive:
        from .adaptive import adaptive_sweep

        summary = adaptive_sweep(exp, out, executor, progress, replan=replan, cohort_size=cohort_size)
    else:
        summary = run_sweep(
            exp, out, executor, progress, replan=replan, cohort_size=cohort_size, reuse=reuse, train=train, only=only
        )
    for line in summary.get("notes", []):
        typer.echo(line, err=True)
    for line in summary.get("diverged", []):
        typer.echo(f"diverged (recorded, never a point of a transition): {line}", err=True)
    left = f", {summary['left']} left untrained" if summary.get("left") else ""
    typer.echo(
        f"{summary['done']} trained, {summary['skipped']} already done, {summary['failed']} failed{left}", err=True
    )
    for rid, msg in summary["failures"]:
        typer.echo(f"failed: {rid}: {msg}", err=True)
    if summary["failed"]:
        raise typer.Exit(1)


@app.command()
def results(
    sweep_dir: Path = typer.Argument(...),
    format: str = typer.Option("csv", help="csv, json or table"),
):
    """One row per finished run and target operation (reads only)."""
    from .sweep.results import collect

    df = collect(sweep_dir)
    if format == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
    elif format == "json":
        typer.echo(df.to_json(orient="records", indent=1))
    elif format == "table":
        typer.echo(df.to_string(index=False))
    else:
        raise UserError(f"unknown format {format!r} (csv, json or table)")


@app.command()
def status(sweep_dir: Path = typer.Argument(...), json_: bool = typer.Option(False, "--json")):
    """Done, running, failed and pending runs of a sweep."""
    from .sweep.results import status as sweep_status

    s = sweep_status(sweep_dir)
    if json_:
        typer.echo(json.dumps(s, indent=1))
        return
    typer.echo(
        f"{s['total']} runs: {s['done']} done, {s['running']} running, {s['interrupted']} interrupted, "
        f"{s['failed']} failed, {s['pending']} pending, {s['corrupt']} corrupt (recomputed by the next sweep)"
        + ("" if s["driver_running"] else " (no sweep driver running)")
    )
    for a in s["active"]:
        typer.echo(
            f"  {a['state']}: {a['run_id']} {a['mixture']} width {a['width']} seed {a['seed']} step {a['step']}/{a['steps']}"
        )
    for f in s["failures"]:
        typer.echo(f"  failed: {f['run_id']} {f['error']}")


@app.command()
def transition(
    points: Path = typer.Argument(..., help="CSV with columns params,accuracy,seed (3+ widths, 3+ seeds)"),
    n_boot: int = typer.Option(N_BOOT, help="bootstrap replicates"),
    frac: float = typer.Option(0.8, help="P* is where the fit reaches frac x its asymptote"),
    learned_floor: float = typer.Option(0.8, help="an asymptote below this means no transition"),
    success: float = typer.Option(0.8, help="a run succeeds (P50 view) when its accuracy reaches this"),
):
    """Fit a learning transition (P* and P50, with 95% intervals) to (params, accuracy, seed) points; prints JSON."""
    from .analysis.transition import fit_transition

    df = _read_table(points, {"params", "accuracy", "seed"})
    for name, v in (("frac", frac), ("learned-floor", learned_floor), ("success", success)):
        if not 0 < v <= 1:
            raise UserError(f"--{name} must be in (0, 1], got {v}")
    _check_n_boot(n_boot)
    for col in ("params", "accuracy"):
        if not _numeric(df[col]):
            raise UserError(f"column {col!r} of {str(points)!r} holds values that are not numbers")
    t = fit_transition(
        df.params.astype(float),
        df.accuracy.astype(float),
        df.seed,
        n_boot=n_boot,
        frac=frac,
        learned_floor=learned_floor,
        success=success,
    )
    typer.echo(json.dumps(t.to_dict(), indent=2))


def _numeric(col) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(col))


def _read_table(path: Path, columns: set[str]):
    import pandas as pd

    if not path.is_file():
        raise UserError(f"file {str(path)!r} not found")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise UserError(f"cannot read {str(path)!r} as CSV: {e}") from None
    missing = columns - set(df.columns)
    if missing:
        raise UserError(f"{str(path)!r} lacks column(s) {', '.join(sorted(missing))}")
    return df


@app.command()
def ratios(
    results: Path = typer.Argument(..., help="a results.csv that `analyze` wrote (one row per run and target op)"),
    n_boot: int = typer.Option(N_BOOT, help="bootstrap replicates per transition"),
    out: Optional[Path] = typer.Option(None, help="write transitions.csv and ratios.csv in this directory"),
):
    """Transitions and joint-benefit ratios from a results table alone (no run directories
    needed); prints both tables as CSV, or writes them with --out."""
    from .analysis.tables import budgets_of, transitions
    from .analysis.tables import ratios as ratio_table
    from .fileio import atomic_write_text

    _check_n_boot(n_boot)
    if out is not None and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is not a directory")
    df = _read_table(results, {"mixture", "target_op", "params", "accuracy", "seed", "width"})
    trans, fits = transitions(df, n_boot=n_boot)
    tables = {
        "transitions.csv": trans.to_csv(index=False),
        "ratios.csv": ratio_table(fits, budgets_of(df)).to_csv(index=False),
    }
    if out is None:
        typer.echo("\n".join(tables.values()))
        return
    if not out.is_dir():
        raise UserError(f"--out {str(out)!r} is not a directory")
    for name, text in tables.items():
        atomic_write_text(out / name, text)
        typer.echo(f"wrote {out / name}")


@app.command()
def claims(
    dirs: List[Path] = typer.Argument(..., help="result directories holding results.csv (e.g. docs/results/*)"),
    format: str = typer.Option("md", help="md or csv"),
    n_boot: int = typer.Option(N_BOOT, help="bootstrap replicates per transition"),
    missing: bool = typer.Option(False, help="also list the claims whose source is not among DIRS, as not run"),
):
    """The paper's claims against result tables: ours with 95% interval, design, verdict, command."""
    from .analysis.claims import claims_table

    _check_n_boot(n_boot)
    typer.echo(claims_table(dirs, format, n_boot, missing), nl=False)


@app.command()
def analyze(
    sweep_dir: Path = typer.Argument(...),
    n_boot: int = typer.Option(N_BOOT, help="bootstrap replicates per transition"),
    width: Optional[int] = typer.Option(None, help="width of the runs used for embeddings and ablations"),
    out: Optional[Path] = typer.Option(None, help="report directory (default: SWEEP_DIR/report)"),
):
    """Write the report (index.html, figures, CSV tables) of a sweep directory, or of a directory of
    finished runs' records (docs/results/<source>); the claims whose source it is head the page."""
    from .analysis.claims import source_names
    from .report import write_report

    _check_n_boot(n_boot)
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file")
    source = sweep_dir.resolve().name
    path, _ = write_report(
        sweep_dir, n_boot=n_boot, width=width, claims_source=source if source in source_names() else None, report=out
    )
    typer.echo(str(path))


@app.command()
def residues(
    sweep_dir: Path = typer.Argument(..., help="a sweep directory whose runs keep their checkpoints"),
    out: Optional[Path] = typer.Option(
        None,
        help="CSV to write (default: SWEEP_DIR/residues.csv); where it exists, the runs whose checkpoints "
        "are gone keep their rows from it",
    ),
    op: List[str] = typer.Option([], help="target operations to read (default: every run's targets)"),
    split: str = typer.Option("test", help="prompts to read: test, or validation (to choose a regime)"),
):
    """Which residues of the answer each finished run gets right: its test accuracy modulo each
    divisor of the modulus and the largest divisor it knows (a partial solution: the sum modulo
    10 but not modulo 20), and where its number embeddings put their power (the frequencies of
    Z_n). Prints, per curve and width, the runs by the modulus they know, and per curve and what
    its runs know, their embeddings' power at the frequencies that tell each factor of n; the
    report of the directory (`jointtask analyze`) shows the same tables."""
    import pandas as pd

    from .analysis.residues import embedding_summary, residue_summary, residues_table
    from .fileio import atomic_write_text

    if not (sweep_dir / "plan.json").is_file():
        raise UserError(f"{str(sweep_dir)!r} is not a sweep directory (no plan.json)")
    target = out or sweep_dir / "residues.csv"
    _writable(target)
    previous = None
    if target.is_file():  # runs whose checkpoints are gone keep their rows
        try:
            previous = pd.read_csv(target)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{str(target)!r} is not a residues table: {str(e).splitlines()[0]}") from None
    df = residues_table(sweep_dir, list(op) or None, split, previous)
    atomic_write_text(target, df.to_csv(index=False))
    typer.echo(residue_summary(df).to_string(index=False))
    typer.echo("")
    typer.echo(embedding_summary(df).to_string(index=False))
    typer.echo(str(target), err=True)


@app.command()
def export(
    sweep_dir: Path = typer.Argument(..., help="a sweep directory"),
    out: Path = typer.Option(..., help="records directory (created; e.g. docs/results/<source>)"),
    width: Optional[int] = typer.Option(None, help="width of the runs whose checkpoints the report reads"),
    checkpoints: bool = typer.Option(True, help="copy the checkpoints the report reads (off: records only)"),
    replan: bool = typer.Option(
        False, help="OUT holds the records of an experiment that grew since: take the sweep's plan there"
    ),
):
    """Copy the records of a sweep's finished runs (config.toml, result.json, metrics.jsonl, and the
    checkpoints the report reads) into OUT, from which the sweep resumes and the report is rebuilt.
    Run it as a sweep goes on (--no-checkpoints) to keep what has finished."""
    from .analysis.sweep_analysis import representative_runs
    from .sweep.records import export_records
    from .sweep.results import collect

    df = collect(sweep_dir)
    keep = {r["run_id"] for r in representative_runs(sweep_dir, df, width).values()} if checkpoints else set()
    c = export_records(sweep_dir, out, keep, replan)
    typer.echo(
        f"{c['copied']} runs copied, {c['present']} already there, {c['unfinished']} not finished (not copied)",
        err=True,
    )


@app.command()
def reproduce(
    preset: str = typer.Argument(
        "quick", help="packaged preset: quick (about 15 min on 2 cores) or cpu (every CPU claim)"
    ),
    out: Path = typer.Option(
        ..., help="output directory (a suite sweeps into OUT/<experiment>/; reports in OUT/report/)"
    ),
    workers: Optional[int] = typer.Option(None),
    backend: str = typer.Option("local"),
    address: Optional[str] = typer.Option(None),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set sweep.seeds=5"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (sets base.train.device)"),
    reuse: List[Path] = typer.Option(
        [], help="a sweep or records directory whose finished runs are copied in instead of trained (repeatable)"
    ),
    estimate: bool = typer.Option(True, help="time each run shape briefly and print the time the runs left will take"),
    replan: bool = typer.Option(
        False, help="a packaged experiment changed since OUT was swept: plan it anew there (finished runs are kept)"
    ),
):
    """Run a packaged reproduction (resumable) and write its report with a verdict per claim."""
    from .reproduce import reproduce as run_preset

    _check_out_dir(out)
    _check_reuse(reuse, out)
    res = run_preset(
        preset,
        out,
        workers,
        backend,
        address,
        _with_device(set_, device),
        reuse=reuse,
        estimate=estimate,
        say=lambda line: typer.echo(line, err=True),
        replan=replan,
    )
    for c in res["claims"]:
        typer.echo(f"{c['claim']}: {c['verdict']} -- {c['ours, 95% interval']}")
    typer.echo(f"report: {res['report']} ({res['seconds']:.0f} s)")
    if res["summary"]["failed"]:
        raise typer.Exit(1)


@app.command()
def bench(
    out: Path = typer.Option(..., help="JSON file to write"),
    quick: bool = typer.Option(False, help="short measurements (about a minute)"),
    cohort: bool = typer.Option(False, help="cohorts of 1, 4, 16, 64 runs at widths 8-128, against runs alone"),
    device: str = typer.Option("cpu", help="cpu or cuda (--cohort)"),
):
    """Training throughput: jointtask's trainer against a naive eager loop, and the share of FP32
    peak; with --cohort, model-steps per second of cohorts on this device."""
    from .bench import write_bench

    if not (device == "cpu" or device == "mps" or re.fullmatch(r"cuda(:\d+)?", device)):
        raise UserError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    _writable(out)
    res = write_bench(out, quick, cohort, device)
    if cohort:
        m = res["machine"]
        typer.echo(f"{m['name']} ({m['device']}), torch {m['torch']}: model-steps/s (speedup over one run alone)")
        for w, r in res["widths"].items():
            typer.echo(
                f"width {w:>4}: alone {r['solo']:8.1f}  "
                + "  ".join(f"K={k} {r[k]:8.1f} ({r['speedup'][k]:.2f}x)" for k in r["speedup"])
            )
        return
    m = res["machine"]
    typer.echo(
        f"{m['processor']} ({', '.join(m['vector_extensions']) or 'no vector extensions reported'}), "
        f"torch {m['torch']}, one thread; path: {res['path']}"
    )
    for w, r in res["widths"].items():
        typer.echo(
            f"width {w:>4}: ours {r['ours_tok_s']:>9.0f} tok/s, naive {r['naive_tok_s']:>9.0f} tok/s, "
            f"ratio {r['ratio']:.2f}, {r['peak_fraction']:.1%} of peak"
        )
    typer.echo(f"recommended: {res['recommendation']}")


@app.command()
def compat(
    mixture: str = typer.Argument(..., help="e.g. ADD+MAX+MED; the first op is the target"),
    modulus: Optional[int] = typer.Option(None),
    degree: Optional[int] = typer.Option(None),
):
    """A-priori compatibility score of a target with its companions (ours; docs/definitions.md); prints JSON."""
    from .analysis.compatibility import compatibility
    from .tasks.config import TaskConfig, parse_ops

    ops = parse_ops(mixture)
    if len(ops) < 2:
        raise UserError("give a target and at least one companion, e.g. ADD+MAX")
    _validated(TaskConfig, ops=ops, modulus=modulus, degree=degree)
    typer.echo(json.dumps(compatibility(ops[0], ops[1:], modulus, degree), indent=2))


def _with_device(overrides: list[str], device: str | None) -> list[str]:
    """--device is shorthand for --set base.train.device=..."""
    return [*overrides, f"base.train.device='{device}'"] if device else list(overrides)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file")


def _check_n_boot(n_boot: int) -> None:
    if n_boot < 1:
        raise UserError(f"--n-boot must be >= 1, got {n_boot}")


def _writable(path: Path) -> None:
    """Refuse an output file whose directory is missing or which is a directory, before any work."""
    if path.is_dir():
        raise UserError(f"--out {str(path)!r} is a directory")
    if not path.parent.is_dir():
        raise UserError(f"--out {str(path)!r}: directory {str(path.parent)!r} does not exist")


def _validated(model, **kwargs):
    from pydantic import ValidationError

    from .schema import validation_message

    try:
        return model(**kwargs)
    except ValidationError as e:
        raise UserError(validation_message(e)) from None


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops a command as Ctrl-C does: a sweep logs what it did first


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:  # typer.Exit(n) comes back as a return value here
            sys.exit(rc)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # paths, permissions, a full disk: the user's to fix, one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like; anything else is our bug
        # by class name: typer may raise the exceptions of a click of its own, not the installed one
        kinds = {c.__name__ for c in type(e).__mro__}
        if "Exit" in kinds:
            sys.exit(getattr(e, "exit_code", 0))
        if "ClickException" in kinds:
            print(f"error: {e.format_message()}", file=sys.stderr)  # pyright: ignore[reportAttributeAccessIssue]
            sys.exit(2)
        if "Abort" in kinds:
            sys.exit(1)
        print(f"internal error: {type(e).__name__}: {e} (traceback in {_log_traceback(e)})", file=sys.stderr)
        sys.exit(3)


def _log_traceback(e: BaseException) -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="jointtask-error-", suffix=".log")
    with open(fd, "w") as f:
        f.write("".join(traceback.format_exception(e)))
    return path


if __name__ == "__main__":
    main()
