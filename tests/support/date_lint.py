"""The date lint (``make lint``): literal calendar dates within two years of today in tests and benches.

A date written into a test expires: a hold window that was tomorrow when the test was written is yesterday a week
later, and the test fails for no fault of the code (CI went red on a fresh clone that way). Dates that the code
compares with "now" are built relative to now (``tests/support/clock.py``). A literal date stays only where time
does not matter to what is asserted, and is then marked:

- a line that carries ``date-lint: recorded``;
- a Python file with ``# date-lint: recorded file`` in its first 40 lines (say why in the same comment);
- JSON fixtures listed in a ``RECORDED`` file in their folder or above it: one glob per line, relative to that
  folder, ``#`` starts a comment (say there what was recorded and why time does not matter).

Dates far from today (``0001-01-01``, ``1970-01-01``, ``9999-12-31``) are not flagged: nobody mistakes them for a
moment that is about to pass.

    python -m tests.support.date_lint [PATH ...]      # default: tests bench
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

DATE = re.compile(r"(?<![0-9])((?:19|20)[0-9]{2})-([0-9]{2})-([0-9]{2})(?![0-9])")
LINE_MARK = "date-lint: recorded"
FILE_MARK = "date-lint: recorded file"
MANIFEST = "RECORDED"
SUFFIXES = {".py", ".json"}
WINDOW_DAYS = 730


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: literal date {self.text} is within two years of today — build it relative to "
            f"now (tests/support/clock.py), or mark it '{LINE_MARK}' where time does not matter to the assertion"
        )


def near(found: re.Match[str], today: date) -> bool:
    year, month, day = (int(part) for part in found.groups())
    try:
        return abs((date(year, month, day) - today).days) <= WINDOW_DAYS
    except ValueError:  # not a real date ("2026-13-01" as a parser's bad input): judge it by its year
        return abs(year - today.year) <= WINDOW_DAYS // 365


def recorded_globs(path: Path, root: Path) -> list[str]:
    """The globs of every RECORDED manifest from ``path``'s folder up to ``root``, relative to ``path``'s folder."""
    globs: list[str] = []
    folder = path.parent
    while True:
        manifest = folder / MANIFEST
        if manifest.is_file():
            relative = path.relative_to(folder).as_posix()
            for raw in manifest.read_text().splitlines():
                pattern = raw.split("#", 1)[0].strip()
                if pattern and fnmatch.fnmatch(relative, pattern):
                    globs.append(pattern)
        if folder == root or folder == folder.parent:
            return globs
        folder = folder.parent


def check_file(path: Path, root: Path, today: date) -> list[Finding]:
    if path.suffix == ".json" and recorded_globs(path, root):
        return []
    lines = path.read_text(errors="replace").splitlines()
    if path.suffix == ".py" and any(FILE_MARK in line for line in lines[:40]):
        return []
    return [
        Finding(path, number, text)
        for number, line in enumerate(lines, start=1)
        if LINE_MARK not in line
        for text in sorted({found.group(0) for found in DATE.finditer(line) if near(found, today)})
    ]


def check(paths: list[Path], today: date | None = None) -> list[Finding]:
    today = today or datetime.now(UTC).date()
    findings: list[Finding] = []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        root = top if top.is_dir() else top.parent
        for path in files:
            findings += check_file(path, root, today)
    return findings


def main(argv: list[str] | None = None) -> int:
    paths = [Path(arg) for arg in (argv if argv is not None else sys.argv[1:])] or [Path("tests"), Path("bench")]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        print(f"date lint: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    findings = check(paths)
    for finding in findings:
        print(finding)
    if findings:
        print(f"date lint: {len(findings)} literal date(s) that will expire", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
