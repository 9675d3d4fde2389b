"""Command line: `jointtask data | train | sweep | results | status | transition | analyze | bench | reproduce`.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Joint task training of small looped transformers: tasks, runs, sweeps, analysis.")


@app.command()
def data(
    ops: str = typer.Option(..., help="operations, comma separated, e.g. ADD,MAX"),
    count: int = typer.Option(100, help="samples to write"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., help="JSON lines file to write"),
    modulus: Optional[int] = typer.Option(None, help="modulus n (ListOps family)"),
    degree: Optional[int] = typer.Option(None, help="k of S_k (permutation family)"),
    max_depth: int = typer.Option(2, help="nesting levels, the root counting as one"),
    split: str = typer.Option("train", help="train or test side of the held-out split"),
    test_fraction: float = typer.Option(0.2),
):
    """Write generated samples (tokens, prompt, answer, op) as JSON lines."""
    from .fileio import atomic_write_text
    from .tasks.dataset import generate
    from .tasks.spec import TaskConfig, parse_ops

    task = _validated(TaskConfig, ops=parse_ops(ops), modulus=modulus, degree=degree, max_depth=max_depth)
    samples = generate(task, count, seed, split, test_fraction)
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
    from .train.loop import train_run

    cfg = load_config(config, set_)
    result = train_run(cfg, out, resume=resume, stop_after=stop_after, quiet=quiet, init_from=init_from)
    if result is None:
        typer.echo(f"stopped after step {stop_after}; continue with --resume", err=True)
    else:
        typer.echo(json.dumps(result, indent=2))


def _validated(model, **kwargs):
    from pydantic import ValidationError

    from .schema import validation_message

    try:
        return model(**kwargs)
    except ValidationError as e:
        raise UserError(validation_message(e)) from None


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            print(f"error: {e.format_message()}", file=sys.stderr)
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
