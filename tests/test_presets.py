"""The packaged reproductions plan what their claims read: every curve a claims row compares, with
the design a verdict needs, and runs shared between experiments by their ids."""

import pytest

from jointtask.analysis.claims import CLAIMS, MIN_SEEDS, curves_of
from jointtask.errors import UserError
from jointtask.reproduce import load_preset
from jointtask.sweep.experiment import plan


def curves(exp) -> dict[tuple[str, str], set[tuple[int, int]]]:
    """(mixture, target op) -> the (width, seed) points the experiment plans for it."""
    out: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for r in plan(exp):
        for op in r.targets:
            out.setdefault((r.mixture, op), set()).add((r.width, r.seed))
    return out


@pytest.mark.parametrize("preset", ["cpu", "quick"])
def test_every_claim_of_a_preset_has_its_curves_with_a_deciding_design(preset):
    exps, _ = load_preset(preset)
    rows = 0
    for exp in exps:
        planned = curves(exp)
        for claim in (c for c in CLAIMS if c.source == exp.name):
            rows += 1
            for curve in curves_of(claim):
                assert curve in planned, f"{exp.name} plans no {curve} for {claim.claim}"
                widths = {w for w, _ in planned[curve]}
                seeds = {s for _, s in planned[curve]}
                assert len(seeds) >= MIN_SEEDS and len(widths) >= (6 if preset == "cpu" else 5), (exp.name, curve)
    assert rows >= (6 if preset == "cpu" else 2)


def test_the_cpu_experiments_share_one_add_curve():
    """ADD alone is planned by every experiment of `reproduce cpu` with the same run ids (all of its
    runs, or a part: the lower widths, or fewer seeds where C2's and C3's curve has more), so it is
    trained once and read by each claim; the grid is about 1.2x apart."""
    exps, suite = load_preset("cpu")
    assert suite and len(exps) >= 4
    exps = [e for e in exps if e.base["data"]["protocol"] == "paper"]  # the strict row has its own curve
    ids = [{r.run_id for r in plan(e) if r.mixture == "ADD"} for e in exps]
    full = max(ids, key=len)  # C2's and C3's curve: more seeds at some widths
    assert all(len(i) >= 6 * MIN_SEEDS and i <= full for i in ids)  # each a part of the one curve
    assert sum(i == full for i in ids) >= 2
    widths = sorted({r.width for r in plan(exps[0]) if r.mixture == "ADD"})
    assert max(b / a for a, b in zip(widths, widths[1:])) <= 1.25


def test_a_preset_file_that_is_not_a_suite_or_names_an_experiment_twice_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('suite = "cpu/c2.toml"\n')
    with pytest.raises(UserError, match="a suite holds one key"):
        load_preset(str(bad))
    twice = tmp_path / "twice.toml"
    (tmp_path / "e.toml").write_text(
        'name = "e"\n[sweep]\nmixtures = ["MAX"]\nwidths = [4]\n[base.task]\nmodulus = 5\n'
    )
    twice.write_text('suite = ["e.toml", "e.toml"]\n')
    with pytest.raises(UserError, match="names an experiment twice"):
        load_preset(str(twice))
    with pytest.raises(UserError, match="unknown preset 'nosuch'"):
        load_preset("nosuch")


def test_the_paper_scale_suite_is_the_papers_setting():
    """`reproduce paper`: depth 2, the paper's protocol, 8 seeds, widths up to 128 and beyond, mod 20
    and the prime 43 (C4), every claim's experiment."""
    exps, suite = load_preset("paper")
    assert suite and len(exps) >= 9
    for e in exps:
        runs = plan(e)
        assert {r.config.task.max_depth for r in runs} == {2} and {r.config.data.protocol for r in runs} == {"paper"}
        assert len(e.sweep.seed_list()) >= 8 and max(r.width for r in runs) >= 128
    moduli = {e.base["task"].get("modulus") for e in exps}
    assert {20, 43} <= moduli
