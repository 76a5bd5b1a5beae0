"""Reading a trace back from the local stack's Jaeger (its query API, ``/api/traces/{id}``).

The demo uses it to say that the seed incident's trace is there before printing the link; the e2e test
checks the span tree through it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JaegerSpan:
    span_id: str
    parent_id: str | None
    name: str
    service: str
    tags: dict[str, Any]
    links: tuple[tuple[str, str], ...] = field(default=())

    @property
    def kind(self) -> str | None:
        value = self.tags.get("span.kind")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class JaegerTrace:
    trace_id: str
    spans: tuple[JaegerSpan, ...]

    def named(self, name: str) -> list[JaegerSpan]:
        return [s for s in self.spans if s.name == name]

    def children(self, parent: JaegerSpan) -> list[JaegerSpan]:
        return [s for s in self.spans if s.parent_id == parent.span_id]

    def names(self) -> set[str]:
        return {s.name for s in self.spans}


def _get(url: str, timeout: float) -> tuple[int, Any]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _parse(doc: dict[str, Any]) -> JaegerTrace:
    processes = {key: p.get("serviceName", "") for key, p in doc.get("processes", {}).items()}
    spans = []
    for raw in doc.get("spans", []):
        parent = next(
            (r["spanID"] for r in raw.get("references", []) if r.get("refType") == "CHILD_OF"),
            None,
        )
        links = tuple(
            (r["traceID"], r["spanID"])
            for r in raw.get("references", [])
            if r.get("refType") == "FOLLOWS_FROM" or (r.get("refType") == "CHILD_OF" and r["spanID"] != parent)
        )
        spans.append(
            JaegerSpan(
                span_id=raw["spanID"],
                parent_id=parent,
                name=raw["operationName"],
                service=processes.get(raw.get("processID", ""), ""),
                tags={t["key"]: t.get("value") for t in raw.get("tags", [])},
                links=links,
            )
        )
    return JaegerTrace(trace_id=doc["traceID"], spans=tuple(spans))


def fetch_trace(ui_url: str, trace_id: str, timeout: float = 5.0) -> JaegerTrace | None:
    """The trace as Jaeger has it now, or None while it has none of it."""
    status, body = _get(f"{ui_url.rstrip('/')}/api/traces/{trace_id}", timeout)
    if status != 200 or not isinstance(body, dict) or not body.get("data"):
        return None
    return _parse(body["data"][0])


def wait_for_trace(ui_url: str, trace_id: str, needs: Iterable[str] = (), timeout: float = 30.0) -> JaegerTrace | None:
    """Poll Jaeger until the trace holds a span of every name in ``needs`` (spans arrive in batches)."""
    wanted = set(needs)
    deadline = time.monotonic() + timeout
    trace: JaegerTrace | None = None
    while time.monotonic() < deadline:
        try:
            trace = fetch_trace(ui_url, trace_id)
        except OSError:
            trace = None
        if trace is not None and wanted <= trace.names():
            return trace
        time.sleep(0.25)
    return trace


def zipkin_span_names(zipkin_url: str, trace_id: str, timeout: float = 5.0) -> list[str] | None:
    """The span names Zipkin holds for the trace (Zipkin lower-cases them), or None while it has none."""
    status, body = _get(f"{zipkin_url.rstrip('/')}/api/v2/trace/{trace_id}", timeout)
    if status != 200 or not isinstance(body, list) or not body:
        return None
    return [str(span.get("name", "")) for span in body]


def wait_for_zipkin(
    zipkin_url: str, trace_id: str, needs: Iterable[str] = (), timeout: float = 30.0
) -> list[str] | None:
    """Poll Zipkin until it holds a span of every (lower-case) name in ``needs``."""
    wanted = {name.lower() for name in needs}
    deadline = time.monotonic() + timeout
    names: list[str] | None = None
    while time.monotonic() < deadline:
        try:
            names = zipkin_span_names(zipkin_url, trace_id)
        except OSError:
            names = None
        if names is not None and wanted <= set(names):
            return names
        time.sleep(0.25)
    return names
