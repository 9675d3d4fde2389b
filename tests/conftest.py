import contextlib
import io
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# One torch thread, as in every worker process of a sweep: with two, a test that trains in this
# process ran 10x slower while another process kept the second core busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["JOINTTASK_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


def run_cli(*args, timeout=600, process=False, env=None):
    """Run the real command line, `jointtask.cli.main`, on these arguments: in this process (its
    exit status, stdout and stderr as a subprocess would give them), or with `process=True` in a
    fresh interpreter (always with `env`), for what only a process shows: signals, imports, a
    different environment, the interpreter's own exit."""
    argv = [str(a) for a in args]
    if process or env is not None:
        return subprocess.run(
            [sys.executable, "-m", "jointtask.cli", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
            env=env,
        )
    from jointtask.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd, sigterm = os.getcwd(), signal.getsignal(signal.SIGTERM)
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                rc = 0
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if e.code is not None and not isinstance(e.code, int):
                    print(e.code, file=sys.stderr)
            except BaseException:  # what the interpreter would print on its way out
                traceback.print_exc()
                rc = 1
    finally:
        os.chdir(cwd)
        signal.signal(signal.SIGTERM, sigterm)
    return subprocess.CompletedProcess(["jointtask", *argv], rc, out.getvalue(), err.getvalue())
