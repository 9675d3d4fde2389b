"""The Python API: the README's example runs as written, and the API gives the CLI's numbers."""

import os
import re

import pandas as pd
import pytest

import jointtask as jt

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # every test here trains, or starts processes


def test_the_readme_example_runs(tmp_path, capsys):
    code = re.search(r"## Python API.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert code, "README.md has no Python API example"
    for name in ("docs", "configs"):
        os.symlink(ROOT / name, tmp_path / name)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code.group(1), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "accuracy_validation" in printed and "torch.Size([1, 1, 7, 7])" in printed  # one head, the 7 prompt tokens
    model = jt.load_model(tmp_path / "runs" / "api-example")
    names = model.hook_names()
    _, cache = model.run_with_cache(model.encode("MAX ( 3 1 4 ) ="))
    for p in range(4):  # every pass's residual stream and attention pattern, by standard names
        assert f"passes.{p}.hook_resid_pre" in cache and f"passes.{p}.attn.hook_pattern" in cache
    assert set(cache) == set(names)


def test_the_api_gives_the_numbers_of_the_command_line(tmp_path):
    source = ROOT / "docs" / "results" / "regime-b256"
    df = jt.results(source)
    assert df.equals(pd.read_csv(source / "results.csv").astype(df.dtypes.to_dict()))
    r = run_cli("ratios", source / "results.csv", "--out", tmp_path, "--n-boot", "200")
    assert r.returncode == 0, r.stderr
    cli = pd.read_csv(tmp_path / "transitions.csv")
    api = jt.transition(df, n_boot=200)
    for col in ("p_star", "p50", "p50_ci_low", "p50_ci_high", "lo", "hi", "p_min", "p_max", "n_seeds"):
        got, want = api[col].astype(float).tolist(), cli[col].astype(float).tolist()
        assert got == pytest.approx(want, nan_ok=True), col


def test_bad_arguments_raise_one_error_type(tmp_path):
    with pytest.raises(jt.UserError, match="no curve"):
        jt.transition(ROOT / "docs" / "results" / "regime-b256", mixture="MAX")
    with pytest.raises(jt.UserError, match="n_boot"):
        jt.ratios(ROOT / "docs" / "results" / "regime-b256", n_boot=0)
    with pytest.raises(jt.UserError, match="not a trained run directory"):
        jt.load_model(tmp_path)
    with pytest.raises(jt.UserError, match="unknown token"):
        jt.load_model(_tiny(tmp_path)).encode("FOO ( 1 ) =")
    with pytest.raises(jt.UserError):
        jt.train(ROOT / "configs" / "max-mod10.toml", out=tmp_path / "x", overrides={"model.width": -1})


def _tiny(tmp_path):
    out = tmp_path / "tiny"
    jt.train(ROOT / "configs" / "max-mod10.toml", out=out, overrides={"train.steps": 5, "model.width": 8})
    return out
