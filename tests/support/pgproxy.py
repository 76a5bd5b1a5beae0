"""A fault-injecting TCP proxy for PostgreSQL's wire protocol, for the hostile-network tests: it relays a client to
the server and, on request,

- cuts a connection **after a COMMIT has reached the server and before its reply reaches the client** (the in-doubt
  commit: the transaction is committed, the client cannot know);
- cuts a connection **in the middle of a transaction**: the COMMIT never reaches the server (it rolls back);
- adds **latency** to everything it relays, both ways;
- **stalls** every connection established so far: nothing moves either way until ``heal()``; new connections pass.

What a proxy can and cannot simulate: it can delay, stall and cut established connections and drop replies; it
cannot make the client's SYNs vanish (a true black hole needs netfilter), and a cut it makes is seen by both ends
at once, where a real partition may leave the server waiting for its TCP keepalive."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Any

from tests.support.tcpproxy import Faults

_UNTYPED_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest: answered by one byte, then the real startup


class PgProxy(Faults):
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        super().__init__()
        self.target = (target_host, target_port)
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        #: after a statement containing this passes, the next COMMIT's reply is never delivered (one shot)
        self.arm_on: bytes | None = None
        #: whether an armed connection's COMMIT reaches the server (in doubt) or not (cut mid-transaction)
        self.commit_reaches_server = True
        self.cuts = 0
        threading.Thread(target=self._accept, name="pgproxy", daemon=True).start()

    def cut_commit_after(self, marker: bytes) -> None:
        """The COMMIT after a statement containing ``marker`` reaches the server; its reply never comes back."""
        with self._lock:
            self.arm_on, self.commit_reaches_server = marker, True

    def cut_before_commit_after(self, marker: bytes) -> None:
        """The connection is cut when the transaction that ran ``marker`` sends its COMMIT, which is not relayed."""
        with self._lock:
            self.arm_on, self.commit_reaches_server = marker, False

    def close(self) -> None:
        self._closing = True
        self.heal()
        self.server.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            state = {"id": self._numbered(), "armed": False, "cut": False, "replied": threading.Event()}
            threading.Thread(target=self._client_side, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._server_side, args=(upstream, client, state), daemon=True).start()

    def _client_side(self, client: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        """Client → server, message by message (the startup messages have no type byte)."""
        buffer = b""
        typed = False
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                self._hold(state["id"], time.monotonic())
                buffer += chunk
                while True:
                    if not typed:
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        message, buffer = buffer[:length], buffer[length:]
                        typed = code not in _UNTYPED_CODES
                    else:
                        if len(buffer) < 5:
                            break
                        length = struct.unpack("!i", buffer[1:5])[0] + 1
                        if len(buffer) < length:
                            break
                        message, buffer = buffer[:length], buffer[length:]
                        self._inspect(message, state)
                    if state["cut"] and not state["reaches"]:
                        raise ConnectionAbortedError  # the COMMIT is not relayed: the server rolls back
                    upstream.sendall(message)
                    if state["cut"]:
                        # the server's reply to the COMMIT is its proof that it committed; it is never relayed
                        state["replied"].wait(5)
                        raise ConnectionAbortedError
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _inspect(self, message: bytes, state: dict[str, Any]) -> None:
        kind, body = message[:1], message[5:]
        if kind not in (b"Q", b"P"):
            return
        with self._lock:
            if self.arm_on is not None and self.arm_on in body:
                state["armed"], state["reaches"] = True, self.commit_reaches_server
                self.arm_on = None
            elif state["armed"] and b"COMMIT" in body.upper():
                state["cut"] = True
                self.cuts += 1

    def _server_side(self, upstream: socket.socket, client: socket.socket, state: dict[str, Any]) -> None:
        try:
            while True:
                chunk = upstream.recv(65536)
                if not chunk or state["cut"]:
                    state["replied"].set()
                    break
                self._hold(state["id"], time.monotonic())
                client.sendall(chunk)
        except OSError:
            pass
