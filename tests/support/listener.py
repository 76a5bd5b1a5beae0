"""A local port that accepts connections: counts them and either closes each at once (a port a local-stack
fallback would reach) or holds it open and never answers (a dependency that hangs)."""

from __future__ import annotations

import socket
import threading


class Listener:
    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            if self.hold:
                self.held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # the accept loop ends before its socket closes
        for conn in self.held:
            conn.close()
        self.socket.close()
