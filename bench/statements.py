"""Statements and transactions allocguard sends, counted per kind of work while an in-process run goes: a failure's
first steps read together (``triage``, the batch thread), incidents recorded and settled together (``together``:
:meth:`Remediator.settle_together`, the batch thread), an incident on the database path (``incident``:
:meth:`Remediator.on_failure`), more events of a settled incident written together (``duplicates``: the folds).
A statement is a cursor ``execute``; a transaction is an explicit ``transaction()`` block, a pipeline (one
implicit transaction), or a statement outside both (autocommit). Counted by patching psycopg and the three entry
points — and the answering of an event in memory (``answer``: it should send none) — for the duration of a
``with`` block (a bench's instrument, never the product's)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from consumer.runtime.dispatch import Dispatcher
from consumer.runtime.folds import Folds
from handlers.pipeline import IncidentResult, Remediator

_where = threading.local()


class Counts:
    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.transactions: Counter[str] = Counter()
        #: on_failure's and settle_together's outcomes (incidents, and duplicates that took the database path), events
        #: folded in memory
        self.outcomes: Counter[str] = Counter()
        self.folded = 0
        self.lock = threading.Lock()

    def report(self) -> dict[str, object]:
        incidents = sum(n for status, n in self.outcomes.items() if status not in ("duplicate", "unresolvable"))
        on_path = self.outcomes["duplicate"]
        per = self._per
        return {
            "incidents": incidents,
            "statements_per_incident": per(sum(self.statements[k] for k in _INCIDENT_WORK), incidents),
            "transactions_per_incident": per(sum(self.transactions[k] for k in _INCIDENT_WORK), incidents),
            "duplicates_answered_in_memory": self.folded,
            "duplicates_on_the_database_path": on_path,
            "statements_per_duplicate_in_memory": per(self.statements["duplicates"], self.folded),
            "transactions_per_duplicate_in_memory": per(self.transactions["duplicates"], self.folded),
            # measured, not assumed: statements sent while an event was being answered in memory
            "own_statements_per_duplicate_in_memory": per(self.statements["answer"], self.folded),
            "statements": dict(self.statements),
            "transactions": dict(self.transactions),
        }

    @staticmethod
    def _per(count: int, of: int) -> float | None:
        return round(count / of, 3) if of else None


#: the kinds of work an incident's statements are counted in
_INCIDENT_WORK = ("triage", "together", "incident")


def _label() -> str | None:
    return getattr(_where, "label", None)


def _depth() -> int:
    return int(getattr(_where, "depth", 0))


@contextmanager
def counted() -> Iterator[Counts]:
    counts = Counts()
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, make(original))

    def labelled(label: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                outer = _label()
                _where.label = outer or label
                try:
                    result = original(*args, **kwargs)
                finally:
                    _where.label = outer
                if label == "incident" and isinstance(result, IncidentResult):
                    with counts.lock:
                        counts.outcomes[result.status] += 1
                if label == "together":  # what it settled (the rest goes on to on_failure, counted there)
                    with counts.lock:
                        counts.outcomes.update(r.status for r, _ in result if r is not None)
                if label == "duplicates":
                    with counts.lock:
                        counts.folded += len(args[1])
                return result

            return run

        return make

    def statement(original: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            label = _label()
            if label is not None:
                with counts.lock:
                    counts.statements[label] += 1
                    if not _depth():
                        counts.transactions[label] += 1
            return original(self, *args, **kwargs)

        return run

    def block(original: Any) -> Any:
        @contextmanager
        def run(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            label = _label()
            if label is not None and not _depth():
                with counts.lock:
                    counts.transactions[label] += 1
            _where.depth = _depth() + 1
            try:
                with original(self, *args, **kwargs) as inner:
                    yield inner
            finally:
                _where.depth = _depth() - 1

        return run

    patch(psycopg.Cursor, "execute", statement)
    patch(psycopg.Connection, "transaction", block)
    patch(psycopg.Connection, "pipeline", block)
    patch(Remediator, "on_failure", labelled("incident"))
    patch(Remediator, "triage", labelled("triage"))
    patch(Remediator, "settle_together", labelled("together"))
    patch(Folds, "_write", labelled("duplicates"))
    patch(Remediator, "known_incident", labelled("answer"))
    patch(Dispatcher, "_fold", labelled("answer"))
    try:
        yield counts
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)
