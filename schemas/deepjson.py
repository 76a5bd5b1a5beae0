"""JSON nested deeper than orjson's 1,024 levels, parsed without recursion.

PostgreSQL stores jsonb nested some ten thousand levels deep (its limit is the server's stack, `max_stack_depth`),
and Debezium passes it on as a string. orjson refuses anything past 1,024 levels, so a failure row the platform
wrote would be dead-lettered instead of handled. :func:`loads` is the fallback: strict JSON (what ``json.loads``
accepts, without NaN or Infinity), an explicit stack instead of recursion, and a cap (:data:`MAX_DEPTH`) above
anything PostgreSQL can store, so a hostile message still costs bounded work."""

from __future__ import annotations

import re
from json.decoder import scanstring  # type: ignore[attr-defined]  # the C string scanner json itself uses
from typing import Any

#: deeper than PostgreSQL stores with any sane ``max_stack_depth``; beyond it a value is refused
MAX_DEPTH = 65_536


class DeepJSONError(ValueError):
    """Not JSON, or nested deeper than the cap."""


_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None}


def _ws(text: str, at: int) -> int:
    match = _WS.match(text, at)
    return match.end() if match else at


def _key(text: str, at: int) -> tuple[str, int]:
    if not text.startswith('"', at):
        raise DeepJSONError(f"expected a string key at {at}")
    key, at = scanstring(text, at + 1, True)
    at = _ws(text, at)
    if not text.startswith(":", at):
        raise DeepJSONError(f"expected ':' at {at}")
    return key, _ws(text, at + 1)


def loads(text: str, max_depth: int = MAX_DEPTH) -> Any:
    try:
        return _loads(text, max_depth)
    except DeepJSONError:
        raise
    except ValueError as exc:  # the string scanner's JSONDecodeError
        raise DeepJSONError(str(exc)) from None


def _loads(text: str, max_depth: int) -> Any:
    end = len(text)
    at = _ws(text, 0)
    #: the open containers, each with the key its next value goes under (None in a list)
    stack: list[tuple[dict[str, Any] | list[Any], str | None]] = []
    while True:
        if at >= end:
            raise DeepJSONError("unexpected end of JSON")
        char = text[at]
        value: Any
        if char in "{[":
            if len(stack) >= max_depth:
                raise DeepJSONError(f"nested deeper than {max_depth} levels")
            at = _ws(text, at + 1)
            if char == "{":
                if text.startswith("}", at):
                    value, at = {}, at + 1
                else:
                    key, at = _key(text, at)
                    stack.append(({}, key))
                    continue
            elif text.startswith("]", at):
                value, at = [], at + 1
            else:
                stack.append(([], None))
                continue
        elif char == '"':
            value, at = scanstring(text, at + 1, True)
        else:
            number = _NUMBER.match(text, at)
            if number is not None:
                integer, fraction, exponent = number.groups()
                value = float(number.group()) if fraction or exponent else int(integer)
                at = number.end()
            else:
                for word, literal in _LITERALS.items():
                    if text.startswith(word, at):
                        value, at = literal, at + len(word)
                        break
                else:
                    raise DeepJSONError(f"unexpected {char!r} at {at}")
        # a value is complete: it goes into its container; closing brackets complete their containers in turn
        while True:
            if not stack:
                if _ws(text, at) != end:
                    raise DeepJSONError(f"extra data at {at}")
                return value
            container, slot = stack[-1]
            if isinstance(container, dict):
                assert slot is not None
                container[slot] = value
            else:
                container.append(value)
            at = _ws(text, at)
            if text.startswith(",", at):
                at = _ws(text, at + 1)
                if isinstance(container, dict):
                    key, at = _key(text, at)
                    stack[-1] = (container, key)
                break
            closer = "}" if isinstance(container, dict) else "]"
            if not text.startswith(closer, at):
                raise DeepJSONError(f"expected ',' or {closer!r} at {at}")
            at += 1
            stack.pop()
            value = container
