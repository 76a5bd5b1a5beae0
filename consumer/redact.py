"""One redaction path for anything that may carry a connection string or a URL with credentials."""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``postgresql://user:secret@host`` → ``postgresql://user:***@host``; ``password=secret`` → ``password=***``."""
    text = _URL_CREDENTIALS.sub(r"\g<head>***@", text)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", text)
