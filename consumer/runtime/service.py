"""Background services beside the poll loop, one contract for all: ``start()`` runs the service on its own daemon
thread, and it ends when the runtime's stop event is set (no other stop call; a service never holds the process
open)."""

from __future__ import annotations

import threading
from typing import ClassVar


class Service:
    """A side thread that runs until ``stop`` is set."""

    name: ClassVar[str]

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"allocguard-{self.name}", daemon=True).start()

    def run(self) -> None:
        raise NotImplementedError
