"""Golden broken suites: each file in tests/data/broken names the error line it must produce.

The first line of each file is `# expect: FILE:LINE: where: what` (a prefix of the message).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit import SuiteError, check_suite, load_suite

BROKEN = Path(__file__).parent / "data" / "broken"


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_broken_suite_reports_file_line_where_what(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(BROKEN)
    try:
        suite = load_suite(path.name)
    except SuiteError as exc:
        messages = [str(p) for p in exc.problems]
    else:
        messages = [str(p) for p in check_suite(suite)]
    expected = _expected(path)
    assert any(m.startswith(expected) for m in messages), messages
