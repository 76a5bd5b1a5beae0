"""Free ports for the local stack: ``python -m consumer.local.ports`` prints ``export ALLOCGUARD_<NAME>_PORT=<n>``
for every stack port whose default is taken on this machine and that the environment does not already set.

CI runs on machines it shares: a stack left running by someone else on the default ports made a clean clone's run
fail in 36 s (Kafka: "Address already in use"). ``.ci/run`` evaluates this before ``stack up``; an operator's own
choice (a port set in the environment) is never moved."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping

from consumer.local.settings import StackSettings


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def any_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def relocations(
    environ: Mapping[str, str] | None = None,
    *,
    is_free: Callable[[int], bool] = port_free,
    pick: Callable[[], int] = any_free_port,
) -> dict[str, int]:
    """``ALLOCGUARD_<NAME>_PORT`` → a free port, for each default port that is taken and not set in ``environ``."""
    env = os.environ if environ is None else environ
    defaults = {
        name: int(field.default)
        for name, field in StackSettings.model_fields.items()
        if name.endswith("_port") and isinstance(field.default, int)
    }
    taken = {int(env[f"ALLOCGUARD_{n.upper()}"]) for n in defaults if f"ALLOCGUARD_{n.upper()}" in env}
    moved: dict[str, int] = {}
    for name, default in defaults.items():
        var = f"ALLOCGUARD_{name.upper()}"
        if var in env:
            continue
        if default not in taken and is_free(default):
            taken.add(default)
            continue
        port = pick()
        while port in taken or not is_free(port):
            port = pick()
        taken.add(port)
        moved[var] = port
    return moved


def main() -> int:
    for var, port in relocations().items():
        print(f"{var}: default port taken on this machine, using {port}", file=sys.stderr)
        print(f"export {var}={port}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
