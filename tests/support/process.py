"""``allocguard run`` as a real subprocess, for the runtime's end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from consumer.local.demo import free_port

__all__ = ["RuntimeProcess", "free_port", "metric_value", "run_cli", "wait_for"]


class RuntimeProcess:
    def __init__(
        self, log_path: Path, group_id: str, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.group_id = group_id
        full_env = {
            **os.environ,
            "ALLOCGUARD_GROUP_ID": group_id,
            "ALLOCGUARD_HEALTH_PORT": str(self.port),
            "ALLOCGUARD_HEALTH_HOST": "127.0.0.1",
            "ALLOCGUARD_MODE": "auto",
            "ALLOCGUARD_ARTIFACTS_DIR": str(log_path.parent / "artifacts"),
            **(env or {}),
        }
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run", *(args or [])],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                body = response.read().decode()
                return response.status, json.loads(body) if path != "/metrics" else body
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read().decode() or "{}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"allocguard run exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)  # poll: the health server answers once the process is up
        raise AssertionError(f"not ready after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self._log.close()

    def wait_exit(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def wait_for(what: str, check: Any, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)  # poll
    raise AssertionError(f"{what}: not true after {timeout}s")


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples named ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    cwd: str | None = None,
    prefix: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``allocguard ARGS`` as its own process, with exactly ``env`` (this process's environment by default);
    ``prefix`` runs it under another program (faketime)."""
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "consumer.cli", *args],
        env=os.environ.copy() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
