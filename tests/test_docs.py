"""Every Python example of the documentation runs: each ```python block of README.md and of
docs/*.md, as a script of its own in a fresh interpreter (issue #13: "every code example in the
docs runs in the test suite"). The docs site includes README's sections by reference, so
testing README covers those pages too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.processes import run_script

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _examples():
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            line = page.read_text().count("\n", 0, match.start()) + 1
            yield pytest.param(match.group(1), id=f"{page.relative_to(ROOT)}:{line}#{number}")


EXAMPLES = list(_examples())


def test_the_pages_have_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("source", EXAMPLES)
def test_the_example_runs(tmp_path, source):
    code, out, err = run_script(tmp_path, source)
    assert code == 0, f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
