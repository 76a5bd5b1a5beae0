"""allocguard's version, and what decides its speed: whether the byte test and the hold scanner are compiled."""

from __future__ import annotations

import importlib.util
import platform
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed


def byte_test_is_native() -> bool:
    """Whether the byte test (consumer/_bytetest.c) is the compiled one."""
    return importlib.util.find_spec("consumer._bytetest") is not None


def hold_scanner_is_native() -> bool:
    """Whether the hold scanner (handlers/_holdscan.c) is compiled."""
    return importlib.util.find_spec("handlers._holdscan") is not None


def version() -> str:
    try:
        return _installed("allocguard")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        return "unknown"


def version_line() -> str:
    import confluent_kafka

    byte_test = "native" if byte_test_is_native() else "python (consumer/_bytetest.c not compiled: slower)"
    scanner = "native" if hold_scanner_is_native() else "msgspec (handlers/_holdscan.c not compiled: slower)"
    return (
        f"allocguard {version()} (byte test: {byte_test}; hold scanner: {scanner}; "
        f"Python {platform.python_version()}; "
        f"librdkafka {confluent_kafka.libversion()[0]})"
    )
