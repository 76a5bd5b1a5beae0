"""Tools built from the Go module proxy (no binary downloads here): each pinned by a ``go.mod``/``go.sum`` in
``deploy/`` and built once into the tool cache, keyed by the hash of those two files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


class GoToolError(RuntimeError):
    pass


def go_binary() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise GoToolError("go not found: this tool is built from the Go module proxy (Go ≥ 1.26)")
    return go


def go_tool(source: Path, package: str, name: str, cache_dir: Path, log: Callable[[str], None]) -> Path:
    """Build ``package`` (a main package required in ``source``/go.mod) once; the binary's path."""
    digest = hashlib.sha256((source / "go.mod").read_bytes() + (source / "go.sum").read_bytes()).hexdigest()[:16]
    target = cache_dir / f"{name}-{digest}"
    binary = target / name
    if (target / ".complete").exists() and binary.exists():
        return binary
    go = go_binary()
    log(f"building {name} from the Go module proxy into {target} (a few minutes, once)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for file in ("go.mod", "go.sum"):
        shutil.copyfile(source / file, staging / file)
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", name, package],
        cwd=staging,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
    )
    if result.returncode != 0:
        raise GoToolError(f"go build of {name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    (target / ".complete").write_text(digest)
    return binary
