import os
import subprocess
import sys
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


def run_cli(*args, cwd=None, timeout=600, env=None):
    """Run the real command line in a subprocess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jointtask.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=e,
    )
