"""README and docs say what the committed data say: every block of numbers is regenerated here
from the files it is printed from, and must match the text word for word."""

import importlib.util
import re
from functools import lru_cache

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow  # every test here starts processes, trains, or refits every committed table

_spec = importlib.util.spec_from_file_location("docs_blocks", ROOT / "scripts" / "docs_blocks.py")
assert _spec and _spec.loader
blocks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(blocks)
render = blocks.render

rendered = lru_cache(maxsize=1)(lambda: render(ROOT))  # recomputing the claims takes a while: once


def test_every_number_block_matches_the_command_that_prints_it():
    for path, text in rendered().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is out of date: python scripts/docs_blocks.py --write"
        )


def test_blocks_are_not_empty():
    for path, text in rendered().items():
        for m in re.finditer(r"<!-- (\w+):begin -->\n(.*?)<!-- \1:end -->", text, re.S):
            assert m.group(2).strip(), f"{path.name}: block {m.group(1)} is empty"


HISTORY = [  # phrases that tell how the repository came to be, not what is true for a user now
    r"\bsessions? \d",
    r"what it took here",
    r"(started|was) and stopped",
    r"this project'?s \d-core",
    r"\(removed\)",
    r"measured on a GPU yet",
    r"device (call|check)",
    r"this \d-core machine",
    r"this machine keeps",
    r"what was tried",
    r"\bearlier versions?\b",
    r"SPEC ?(section|§|\d)",
]


def test_docs_speak_of_what_is_true_now():
    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    paths += [*(ROOT / "scripts").iterdir(), *(ROOT / "experiments").rglob("*.toml"), *(ROOT / "configs").iterdir()]
    paths += [*(ROOT / "src").rglob("*.toml"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "docs").rglob("*.md")]
    for path in paths:
        text = path.read_text()
        for pattern in HISTORY:
            assert not re.search(pattern, text, re.I), f"{path}: {pattern!r}: history belongs in git log"
        assert "shared/" not in text, f"{path}: names a folder outside the repository"
    assert not list((ROOT / "docs" / "results").rglob("*.txt")), "raw logs: make them tables"
    assert not list((ROOT / "docs" / "results").rglob("*.log")), "raw logs: make them tables"


def test_sweeps_that_share_add_runs_hold_the_same_runs():
    """docs/regimes.md: the strict C1 ADD runs repeat the strict C2 sweep's at widths 8-40; C6, C3/C5, C9 and C2 at equal exposure reuse them."""
    import pandas as pd

    c1, quick = (pd.read_csv(ROOT / "docs" / "results" / d / "results.csv") for d in ("strict-c1", "strict-quick"))
    c1 = c1[c1.mixture == "ADD"]
    m = c1.merge(quick[quick.mixture == "ADD"], on=["width", "seed"], suffixes=("", "_quick"))
    assert len(m) == len(c1) == 40
    assert (m.accuracy == m.accuracy_quick).all() and (m.steps == m.steps_quick).all()
    later_sweeps = (
        "strict-c6",
        "strict-c3c5",
        "strict-transfer",
        "strict-exposure",
    )  # they reuse those runs (the same run ids)
    for later in later_sweeps:
        df = pd.read_csv(ROOT / "docs" / "results" / later / "results.csv")
        add = df[(df.mixture == "ADD") & (df.target_op == "ADD")]
        assert sorted(add.run_id) == sorted(c1[c1.target_op == "ADD"].run_id)


def test_committed_report_pages_show_their_tables():
    """A committed docs/results/<source>/index.html prints every transition and ratio of the tables
    beside it, as the report renders them (a page left from an earlier estimator fails here)."""
    import html

    import pandas as pd

    from jointtask.report.html import _p50_text, _p_star_text, _ratio_text

    pages = sorted((ROOT / "docs" / "results").glob("*/index.html"))
    assert pages
    for page in pages:
        text, d = page.read_text(), page.parent
        trans = pd.read_csv(d / "transitions.csv", dtype={"note": str}).fillna({"note": ""})
        shown = [s for _, r in trans.iterrows() for s in (_p_star_text(r), _p50_text(r))]
        rat = pd.read_csv(d / "ratios.csv")
        shown += [s for _, r in rat.iterrows() for s in (_ratio_text(r), _ratio_text(r, "p50_"))]
        for s in shown:
            assert html.escape(s) in text, f"{page.relative_to(ROOT)} does not show {s!r}: regenerate or remove it"


# What the README's paragraph on strict C2 may say about its P* ratio, each with the row it needs
# (interval low, high, verdict): the paragraph carries exactly one, and it must match the row.
STRICT_C2_PROSE = {
    "the P\\* ratio's interval holds 1 but reaches past 2": lambda lo, hi, verdict: (
        lo <= 1 <= 2 < hi and verdict == "inconclusive"
    ),
    "the P\\* ratio's interval holds 1 and lies between 1/2 and 2": lambda lo, hi, verdict: (
        0.5 < lo <= 1 <= hi < 2 and "no benefit" in verdict
    ),
    "the P\\* ratio's interval lies below 1": lambda lo, hi, verdict: hi < 1 and "harm" in verdict,
}


def test_the_readme_prose_on_strict_c2_matches_its_row():
    """The README's paragraph on strict C2 says where the P* ratio's interval lies; the row printed
    from the committed records must say the same, or the prose is stale."""
    readme = (ROOT / "README.md").read_text()
    prose = " ".join(readme.split())
    said = [phrase for phrase in STRICT_C2_PROSE if phrase in prose]
    assert len(said) == 1, f"the README's paragraph on strict C2 says {len(said)} of {list(STRICT_C2_PROSE)}"
    row = next(line for line in readme.splitlines() if line.startswith("| C2 |") and "| cpu-strict-c2 |" in line)
    m = re.search(r"ratio P\* [\d.]+ \[([\d.]+), ([\d.]+)\]", row)
    assert m, row
    verdict = row.split(" | ")[6].split(";")[0].strip()
    assert STRICT_C2_PROSE[said[0]](float(m.group(1)), float(m.group(2)), verdict), (said[0], row)
