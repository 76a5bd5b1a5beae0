from typing import Any

def scan(
    key: bytes | None, value: bytes, spec: tuple[Any, ...], /
) -> tuple[str, str, str, str, str, tuple[str, ...], str, str, str | None, bool | None] | None: ...
