"""allocguard's container image, built on a machine with no registry: podman with runc, a Debian base made by
mmdebstrap from this machine's own apt sources (one for the build stage with a compiler, one to run; each cached
by its inputs), then the project's ``Dockerfile`` with those bases as build-args. Users with a registry build the
same Dockerfile without build-args (its default bases are the registry's ``python:3.11-slim-bookworm``).

``python -m consumer.local.image build`` builds it; ``… run -- ARGS`` runs it with the same runtime settings."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from consumer.local.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
#: what each base brings: the build stage compiles the byte test and the hold scanner (C); the runtime has no compiler
BASES: dict[str, tuple[str, ...]] = {
    "build": ("python3", "python3-venv", "python3-dev", "gcc", "libc6-dev", "ca-certificates"),
    "run": ("python3", "ca-certificates"),
}
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: the sandbox here cannot raise rlimits, and crun fails on its cgroups: runc and fixed ulimits (../shared/infra.md)
CONTAINERS_CONF = """[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
"""


class ImageError(RuntimeError):
    pass


def version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise ImageError("no version in pyproject.toml")


def tag() -> str:
    return f"localhost/allocguard:{version()}"


def podman_env(settings: StackSettings | None = None) -> dict[str, str]:
    conf = (settings or StackSettings()).tool_cache_dir / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(
    *args: str, check: bool = True, capture: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed (apt-get install -y podman runc mmdebstrap)")
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=capture, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise ImageError(f"podman {' '.join(args[:2])} failed ({result.returncode}):\n{(result.stderr or '')[-3000:]}")
    return result


def base_key(kind: str) -> str:
    """A base is rebuilt only when what goes into it changes: its packages, the suite and the apt sources."""
    digest = hashlib.sha256()
    digest.update(f"{SUITE}\n{' '.join(BASES[kind])}\n".encode())
    digest.update(APT_SOURCES.read_bytes())
    return digest.hexdigest()[:12]


def base_image(kind: str, log: Callable[[str], None]) -> str:
    name = f"localhost/allocguard-base-{kind}:{base_key(kind)}"
    if podman("image", "exists", name, check=False).returncode == 0:
        log(f"base {kind}: cached ({name})")
        return name
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (apt-get install -y podman runc mmdebstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="allocguard-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        result = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--quiet",
                f"--include={','.join(BASES[kind])}",
                # no apt lists, caches or docs in the image
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                SUITE,
                str(rootfs),
                str(APT_SOURCES),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap failed ({result.returncode}):\n{result.stderr[-3000:]}")
        podman("import", "--change", "ENV LANG=C.UTF-8", str(rootfs), name)
    log(f"base {kind}: built in {time.monotonic() - started:.0f}s ({name})")
    return name


def build(log: Callable[[str], None] = print, *, registry_bases: bool = False) -> str:
    """Build the image from the Dockerfile; returns its tag. ``registry_bases`` keeps the Dockerfile's defaults."""
    args: list[str] = []
    if not registry_bases:
        args += [
            "--build-arg",
            f"BUILD_BASE={base_image('build', log)}",
            "--build-arg",
            f"BASE={base_image('run', log)}",
        ]
    if CA_BUNDLE.exists():  # pip here goes through a TLS-intercepting proxy: its CA for the build only
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    started = time.monotonic()
    podman(
        "build", "--layers", "-t", tag(), "-f", str(ROOT / "Dockerfile"), *args, str(ROOT), capture=False, timeout=1800
    )
    podman("image", "prune", "-f", check=False)  # the build stage's dangling layers
    log(f"image {tag()} built in {time.monotonic() - started:.0f}s")
    return tag()


def run_args(env: dict[str, str], *, name: str | None = None, detach: bool = False, remove: bool = True) -> list[str]:
    """``podman run`` as production runs it: non-root, a read-only root filesystem, a tmpfs for the evidence
    artifacts, the host's network (the local stack listens on 127.0.0.1)."""
    args = ["run", *(["--rm"] if remove else []), "--network", "host", "--read-only", "--user", "10001"]
    # chown=true: the tmpfs belongs to the container's user (podman 4.3 left ``--tmpfs …:mode=1777`` root's 0755,
    # and every evidence file failed with EACCES)
    args += ["--mount", "type=tmpfs,destination=/var/lib/allocguard/artifacts,tmpfs-size=64m,chown=true"]
    if name is not None:
        args += ["--name", name]
    if detach:
        args.append("-d")
    for key, value in sorted(env.items()):
        args += ["-e", f"{key}={value}"]
    return args


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("build", "run", "tag"):
        print("usage: python -m consumer.local.image build [--registry-bases] | tag | run -- ARGS", file=sys.stderr)
        return 2
    try:
        if argv[0] == "tag":
            print(tag())
        elif argv[0] == "build":
            build(registry_bases="--registry-bases" in argv)
        else:
            from consumer.local.stack import LocalStack

            env = LocalStack(StackSettings(), log=lambda line: None).required_env()
            rest = list(argv[2:] if argv[1:2] == ["--"] else argv[1:])
            return podman(*run_args(env), tag(), *rest, check=False, capture=False, timeout=86400).returncode
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
