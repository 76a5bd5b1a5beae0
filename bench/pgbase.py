"""What PostgreSQL does with allocguard's own statements, back to back — the yardstick for "bound by PostgreSQL,
not Python" — and pgbench's standard run on the same server, in the same bench run.

1. :func:`capturing` records, per worker thread, every statement the runtime's handlers send (text and
   parameters, and where a transaction block begins and ends) while ``allocguard run`` handles signals.
2. :func:`render` turns them into SQL text (psycopg's own client-side literal rendering), one block per
   transaction, exactly in the order each worker sent them.
3. :func:`back_to_back` runs that text with ``pgbench -t 1`` (a C client: no Python on the path), split over a few
   concurrent clients like allocguard's workers, and reports the time pgbench measured — the best of 1, 2 and 4
   clients, so the baseline is as hard to reach as PostgreSQL makes it.
4. :func:`pgbench_tps` runs the standard TPC-B-like pgbench on a database of its own for the SRE's yardstick.

Only statements re-runnable unchanged are captured (allocguard's writes here are upserts); the parameters stay in
memory and in a temporary directory — they are booking and table ids, never guest data.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from consumer.telemetry import TracedConnection, TracedCursor

_BEGIN, _COMMIT = "BEGIN", "COMMIT"


class Capture:
    def __init__(self) -> None:
        self.by_thread: dict[int, list[tuple[Any, Any]]] = {}
        self._lock = threading.Lock()

    def record(self, query: Any, params: Any) -> None:
        if threading.current_thread().name in ("allocguard-probe", "allocguard-wakeups"):
            return  # housekeeping, not per-signal work (the batch thread's statements are, and are kept)
        with self._lock:
            self.by_thread.setdefault(threading.get_ident(), []).append((query, params))

    @property
    def statements(self) -> int:
        return sum(1 for seq in self.by_thread.values() for q, _ in seq if q not in (_BEGIN, _COMMIT))

    @property
    def transactions(self) -> int:
        total = 0
        for seq in self.by_thread.values():
            depth = 0
            for query, _ in seq:
                if query == _BEGIN:
                    total += depth == 0
                    depth += 1
                elif query == _COMMIT:
                    depth -= 1
                elif depth == 0:
                    total += 1
        return total


@contextmanager
def capturing() -> Iterator[Capture]:
    capture = Capture()
    execute, transaction = TracedCursor.execute, TracedConnection.transaction

    def traced_execute(self: TracedCursor, query: Any, params: Any = None, **kwargs: Any) -> TracedCursor:
        capture.record(query, params)
        return execute(self, query, params, **kwargs)

    @contextmanager
    def traced_transaction(self: TracedConnection, *args: Any, **kwargs: Any) -> Iterator[Any]:
        capture.record(_BEGIN, None)
        try:
            with transaction(self, *args, **kwargs) as block:
                yield block
        finally:
            capture.record(_COMMIT, None)

    assert "pipeline" not in TracedConnection.__dict__, "restored below by deleting the override"
    pipeline = TracedConnection.pipeline

    @contextmanager
    def traced_pipeline(self: TracedConnection) -> Iterator[Any]:
        # in autocommit, a pipeline's statements run in one implicit transaction (one Sync at its end)
        capture.record(_BEGIN, None)
        try:
            with pipeline(self) as block:
                yield block
        finally:
            capture.record(_COMMIT, None)

    TracedCursor.execute = traced_execute  # type: ignore[method-assign]
    TracedConnection.transaction = traced_transaction  # type: ignore[method-assign]
    TracedConnection.pipeline = traced_pipeline  # type: ignore[method-assign,assignment]
    try:
        yield capture
    finally:
        TracedCursor.execute = execute  # type: ignore[method-assign]
        TracedConnection.transaction = transaction  # type: ignore[method-assign]
        del TracedConnection.pipeline  # the inherited one again


def render(capture: Capture, dsn: str) -> list[list[str]]:
    """Per worker, its statements as SQL text (savepoints flattened: one BEGIN … COMMIT per outer block)."""
    out: list[list[str]] = []
    with psycopg.connect(dsn) as conn:
        cursor = psycopg.ClientCursor(conn)
        for sequence in capture.by_thread.values():
            lines: list[str] = []
            depth = 0
            for query, params in sequence:
                if query == _BEGIN:
                    if depth == 0:
                        lines.append("BEGIN;")
                    depth += 1
                elif query == _COMMIT:
                    depth -= 1
                    if depth == 0:
                        lines.append("COMMIT;")
                else:
                    text = cursor.mogrify(query, params)
                    lines.append(re.sub(r"\s+", " ", text).strip().rstrip(";") + ";")
            out.append(lines)
    return out


def binary(name: str) -> str:
    """A PostgreSQL client program of the newest installed version (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError(f"{name} not found (Debian's postgresql package installs it)")
    return str(found[-1])


def pgbench_binary() -> str:
    return binary("pgbench")


def dump(admin_dsn: str, path: Path) -> None:
    """The database as it is now (one consistent snapshot; connections and replication go on)."""
    subprocess.run([binary("pg_dump"), "-Fc", "-f", str(path), admin_dsn], check=True, capture_output=True)


def restore_copy(admin_dsn: str, path: Path, name: str) -> str:
    """A fresh database ``name`` restored from :func:`dump`'s file (owners and grants as they were); its DSN as
    the admin. Roles are the cluster's, so the same least-privilege roles work in it."""
    drop_database(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin_dsn, dbname=name)
    done = subprocess.run(
        [binary("pg_restore"), "--exit-on-error", "-d", dsn, str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_restore into {name} failed: {done.stderr[-2000:]}")
    return dsn


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _chunks(sequences: list[list[str]], clients: int, whole: bool = False) -> list[list[str]]:
    """The workers' sequences dealt to ``clients`` scripts, whole transactions kept together; with ``whole``,
    each worker's sequence stays on one client, in its order (a remediation's later statements need its earlier
    ones), the longest first to the least loaded client."""
    if whole:
        dealt: list[list[str]] = [[] for _ in range(clients)]
        for lines in sorted(sequences, key=len, reverse=True):
            min(dealt, key=len).extend(lines)
        return dealt
    blocks: list[list[str]] = []
    for lines in sequences:
        current: list[str] = []
        depth = 0
        for line in lines:
            current.append(line)
            depth += line == "BEGIN;"
            depth -= line == "COMMIT;"
            if depth == 0:
                blocks.append(current)
                current = []
    scripts: list[list[str]] = [[] for _ in range(clients)]
    for n, block in enumerate(blocks):
        scripts[n % clients].extend(block)
    return scripts


def _script_run(path: Path, dsn: str) -> float:
    """Seconds pgbench took to run the script once, connection excluded (its reported latency)."""
    done = subprocess.run(
        [pgbench_binary(), "-n", "-t", "1", "-f", str(path), dsn], capture_output=True, text=True, timeout=600
    )
    found = re.search(r"latency average = ([0-9.]+) ms", done.stdout)
    if done.returncode != 0 or found is None or "aborted" in done.stdout + done.stderr:
        raise RuntimeError(f"pgbench failed on the captured statements: {done.stdout[-1000:]}{done.stderr[-2000:]}")
    return float(found.group(1)) / 1000


def back_to_back(
    sequences: list[list[str]],
    dsn: str | Callable[[int], str],
    clients: tuple[int, ...] = (1, 2, 4),
    lines_per_script: int = 400,
    whole: bool = False,
) -> dict[str, float]:
    """Seconds for PostgreSQL to run the captured statements with pgbench, per client count, and the best.

    pgbench slows down on scripts of thousands of lines (its own CPU), so each client runs its share as scripts
    of a few hundred lines, one after the other, and only the time pgbench reports for running them counts.
    ``dsn`` may name a database per client count (statements that change what they touch run each count on a
    fresh copy); ``whole`` keeps each worker's sequence on one client (see :func:`_chunks`)."""
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in clients:
            spent = [0.0] * count
            target = dsn(count) if callable(dsn) else dsn

            def client(
                n: int, script: list[str], count: int = count, spent: list[float] = spent, target: str = target
            ) -> None:
                part: list[str] = []
                parts = 0
                for line in [*script, None]:
                    if line is not None:
                        part.append(line)
                    depth = sum(x == "BEGIN;" for x in part) - sum(x == "COMMIT;" for x in part)
                    if part and depth == 0 and (line is None or len(part) >= lines_per_script):
                        path = Path(folder) / f"c{count}-{n}-{parts}.sql"
                        path.write_text("\n".join(part) + "\n")
                        spent[n] += _script_run(path, target)
                        part, parts = [], parts + 1

            threads = [
                threading.Thread(target=client, args=(n, script))
                for n, script in enumerate(_chunks(sequences, count, whole))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            walls[str(count)] = max(spent)
    walls["best"] = min(walls.values())
    return walls


def pgbench_tps(admin_dsn: str, seconds: int = 10, clients: int = 4, scale: int = 10) -> float:
    """The standard TPC-B-like pgbench on a database of its own (created once), same server."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'allocguard_pgbench'").fetchone()
        if exists is None:
            conn.execute("CREATE DATABASE allocguard_pgbench")
    dsn = make_conninfo(admin_dsn, dbname="allocguard_pgbench")
    if exists is None:
        subprocess.run([pgbench_binary(), "-i", "-q", "-s", str(scale), dsn], check=True, capture_output=True)
    done = subprocess.run(
        [pgbench_binary(), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), dsn],
        check=True,
        capture_output=True,
        text=True,
    )
    found = re.search(r"tps = ([0-9.]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"no tps in pgbench's output: {done.stdout[-1000:]}")
    return float(found.group(1))
