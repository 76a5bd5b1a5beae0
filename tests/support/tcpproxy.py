"""A fault-injecting TCP relay for any protocol (the Kafka side of the hostile-network tests): it adds latency each
way, stalls every connection established so far (nothing moves either way until ``heal()``; new connections pass,
unless the stall takes them too),
and cuts every open connection at once. Kafka clients reach it through the local broker's FAULTS listener, which
advertises the relay's port (``StackSettings.kafka_faults_proxy_port``), so the connections a client opens after
reading the metadata come through here too. What it cannot simulate: SYNs that vanish (netfilter)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Faults:
    """What a relay does to the bytes it passes, whatever the protocol (this relay and tests/support/pgproxy.py):
    latency each way, and a stall of every connection established so far — nothing moves either way until
    ``heal()``, no byte is lost; connections opened afterwards pass."""

    def __init__(self) -> None:
        #: seconds added to every chunk relayed, each way
        self.latency_s = 0.0
        #: connections relayed so far; each is numbered in order
        self.accepted = 0
        self._stalled_upto = -1  # connections numbered up to this one relay nothing
        self._lock = threading.Lock()
        self._moved = threading.Condition(self._lock)
        self._closing = False

    def stall(self, new_too: bool = False) -> None:
        """Every connection established so far relays nothing until :meth:`heal`; with ``new_too``, every one
        opened meanwhile too (the network itself stalled: no way through at all)."""
        with self._lock:
            self._stalled_upto = (1 << 62) if new_too else self.accepted

    def heal(self) -> None:
        with self._lock:
            self._stalled_upto = -1
            self._moved.notify_all()

    def _numbered(self) -> int:
        with self._lock:
            self.accepted += 1
            return self.accepted

    def _hold(self, number: int, arrived: float) -> None:
        """Before a chunk that arrived at ``arrived`` on connection ``number`` is passed on."""
        with self._lock:
            while number <= self._stalled_upto and not self._closing:
                self._moved.wait(0.5)
            latency = self.latency_s
        if latency > 0:
            time.sleep(max(0.0, arrived + latency - time.monotonic()))  # poll: the injected latency itself


class TcpProxy(Faults):
    def __init__(self, listen_port: int, target_port: int, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.target = (host, target_port)
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, listen_port))
        self.server.listen(128)
        self.port = listen_port
        self.cuts = 0
        self._open: dict[int, tuple[socket.socket, socket.socket]] = {}
        threading.Thread(target=self._accept, name="tcpproxy", daemon=True).start()

    def cut(self) -> int:
        """Close every open connection (both ends see it at once); returns how many."""
        with self._lock:
            pairs = list(self._open.values())
            self._open.clear()
            self.cuts += len(pairs)
        for pair in pairs:
            _close(*pair)
        return len(pairs)

    def close(self) -> None:
        self._closing = True
        self.heal()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: the port is free when this returns
        self.server.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            number = self._numbered()
            with self._lock:
                self._open[number] = (client, upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(number, source, sink), daemon=True).start()

    def _relay(self, number: int, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                self._hold(number, time.monotonic())
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.pop(number, None)
            _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
