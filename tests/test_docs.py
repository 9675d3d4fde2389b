"""README and docs say what the committed data say: every block of numbers is regenerated here
from the files it is printed from, and must match the text word for word."""

import re
from functools import lru_cache

from jointtask.report.blocks import ROOT, render

rendered = lru_cache(maxsize=1)(lambda: render(ROOT))  # recomputing the claims takes a while: once


def test_every_number_block_matches_the_command_that_prints_it():
    for path, text in rendered().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is out of date: python -m jointtask.report.blocks --write"
        )


def test_blocks_are_not_empty():
    for path, text in rendered().items():
        for m in re.finditer(r"<!-- (\w+):begin -->\n(.*?)<!-- \1:end -->", text, re.S):
            assert m.group(2).strip(), f"{path.name}: block {m.group(1)} is empty"


def test_docs_speak_of_what_is_true_now():
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"\bsessions? \d", text, re.I), f"{path}: process history belongs in git log"
        assert "shared/" not in text, f"{path}: names a folder outside the repository"
