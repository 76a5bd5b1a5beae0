from collections.abc import Callable
from typing import Any

def select(
    messages: list[Any],
    topic_class: Callable[[str], int],
    fast: bool,
    created: bytes,
    event_key: bytes,
    kinds: tuple[bytes, ...],
    needles: tuple[bytes, ...],
    /,
) -> tuple[list[Any], dict[str, int], list[Any]]: ...
