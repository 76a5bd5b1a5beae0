"""The date lint: literal dates near today in tests and benches fail ``make lint`` unless marked as recorded."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.date_lint import check, main

ROOT = Path(__file__).resolve().parents[2]
TODAY = datetime.now(UTC).date()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


def test_the_repository_passes() -> None:
    assert check([ROOT / "tests", ROOT / "bench"]) == []


def test_a_dated_window_put_back_into_the_batch_test_fails(tmp_path: Path) -> None:
    """The hold window that turned CI red, written as dates again (yesterday's, as it was on the day it broke)."""
    copy = tmp_path / "tests" / "integration" / "test_signal_batches.py"
    copy.parent.mkdir(parents=True)
    original = (ROOT / "tests/integration/test_signal_batches.py").read_text()
    assert '"startAt": start,' in original, "the batch test builds its window relative to now"
    dated = original.replace('"startAt": start,', f'"startAt": "{day(-1)}T19:00:00Z",').replace(
        '"endAt": end,', f'"endAt": "{day(-1)}T21:00:00Z",'
    )
    copy.write_text(dated)
    findings = check([tmp_path / "tests"])
    lines = [n for n, text in enumerate(dated.splitlines(), start=1) if day(-1) in text]
    assert [(f.path, f.line, f.text) for f in findings] == [(copy, n, day(-1)) for n in lines]
    assert main([str(tmp_path / "tests")]) == 1


def test_marks_far_dates_and_bad_dates(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text(
        "\n".join(
            [
                f'A = "{day(400)}"',  # a year ahead still expires: flagged
                f'B = "{day(-700)}"',  # within two years behind: flagged
                f'C = "{day(800)}"  # beyond two years: not flagged',
                '"0001-01-01", "1970-01-01", "9999-12-31"',  # far from any today
                f'D = "{TODAY.year}-13-01"  # not a real date, judged by its year: flagged',
                f'E = "{day(1)}"  # date-lint: recorded (a captured value, never compared with now)',
            ]
        )
    )
    assert [f.line for f in check([path])] == [1, 2, 5]


def test_a_recorded_file_and_a_manifest_exempt_what_they_name(tmp_path: Path) -> None:
    marked = tmp_path / "test_parse.py"
    marked.write_text(f'# date-lint: recorded file — parser inputs\nX = "{day(0)}"\n')
    fixtures = tmp_path / "fixtures" / "captured"
    fixtures.mkdir(parents=True)
    recorded, unlisted = fixtures / "a_lifecycle.json", fixtures / "other.json"
    for path in (recorded, unlisted):
        path.write_text(f'[{{"value": "{day(0)}T10:00:00Z"}}]\n')
    (tmp_path / "fixtures" / "RECORDED").write_text("# captured from the stack\ncaptured/*_lifecycle.json\n")
    assert [f.path for f in check([tmp_path])] == [unlisted]
    shutil.rmtree(tmp_path / "fixtures")
    marked.write_text(f'X = "{day(0)}"  # the mark must say recorded file, in a comment\n')
    assert [f.path for f in check([tmp_path])] == [marked]
