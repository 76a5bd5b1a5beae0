"""The image as production runs it: built with podman from the project's Dockerfile (Debian bases made here by
mmdebstrap: no registry), non-root, read-only root filesystem, the byte test native — and ``allocguard run`` from
inside it remediates an incident on the local stack (host network) and writes its evidence files."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from consumer.local import image
from consumer.local.demo import free_port
from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack
from tests.support.process import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def built() -> str:
    started = time.monotonic()
    tag = image.build(log=print)
    print(f"image build (bases cached or not): {time.monotonic() - started:.0f}s")
    return tag


def test_the_image_says_its_byte_test_is_native_as_a_non_root_user(built: str) -> None:
    result = image.podman(*image.run_args({}), built, "--version", check=False)
    assert result.returncode == 0, result.stderr
    assert "byte test: native" in result.stdout, result.stdout
    assert "hold scanner: native" in result.stdout, result.stdout
    who = image.podman("run", "--rm", "--entrypoint", "id", built, "-u", check=False)
    assert who.stdout.strip() == "10001", who.stdout + who.stderr
    # the root filesystem is read-only at run time: nothing but the artifacts tmpfs is writable
    probe = image.podman(
        *image.run_args({}), "--entrypoint", "python", built, "-c", "open('/opt/allocguard/x', 'w')", check=False
    )
    assert probe.returncode != 0
    assert "Read-only file system" in probe.stderr, probe.stderr


@pytest.fixture
def container(built: str, stack_settings: StackSettings, unique: str) -> Iterator[Callable[[], dict[str, Any]]]:
    port = free_port()
    name = f"allocguard-test-{unique}"
    env = {
        **LocalStack(stack_settings, log=lambda line: None).required_env(),
        "ALLOCGUARD_MODE": "auto",
        "ALLOCGUARD_GROUP_ID": f"image-{unique}",
        "ALLOCGUARD_HEALTH_HOST": "127.0.0.1",
        "ALLOCGUARD_HEALTH_PORT": str(port),
    }
    image.podman(*image.run_args(env, name=name, detach=True, remove=False), built, "run")

    def readyz() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    try:
        yield readyz
    finally:
        image.podman("rm", "-f", name, check=False)


def test_allocguard_run_from_the_image_remediates_an_incident_and_keeps_its_evidence(
    built: str,
    container: Callable[[], dict[str, Any]],
    platform_connect: Callable[[], psycopg.Connection[Any]],
    unique: str,
) -> None:
    def ready() -> bool:
        try:
            return bool(container().get("ready"))
        except OSError:
            return False

    wait_for("allocguard in the container ready", ready, timeout=90)
    with platform_connect() as conn:
        started = time.monotonic()
        # its own venue, and no platform job whose next attempt could seat the victim once the orphan is gone
        incident = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        victim = incident.victim_id

        def confirmed() -> bool:
            row = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (victim,)).fetchone()
            return row == ("confirmed",)

        wait_for("the victim confirmed by the container", confirmed, timeout=60, interval=0.05)
        print(f"from the image: incident played → victim confirmed in {time.monotonic() - started:.2f}s")
    name = f"allocguard-test-{unique}"
    logs = image.podman("logs", name, check=False).stdout + image.podman("logs", name, check=False).stderr
    assert f"booking {victim}: resolved" in logs, logs[-3000:]
    assert "evidence files not written" not in logs, logs[-3000:]
    # the before/after evidence, written by the non-root user on the read-only image's one writable mount
    listing = image.podman("exec", name, "ls", f"/var/lib/allocguard/artifacts/{victim}", check=False)
    files = listing.stdout.split()
    assert len(files) == 2, listing
    assert sorted(f.rsplit("-", 1)[1] for f in files) == ["after.json", "before.json"], listing
    # SIGTERM (podman stop) → a clean exit 0, before podman's 15 s would turn to SIGKILL
    stopping = time.monotonic()
    image.podman("stop", "-t", "15", name)
    took = time.monotonic() - stopping
    state = image.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert state == "0", f"exit code {state} after {took:.1f}s"
    assert took < 15
