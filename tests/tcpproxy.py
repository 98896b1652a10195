"""Real TCP faults for the tests: a proxy in front of a shared service that a test can cut and restore, and a
listener that takes connections and never answers (a hung or blackholed service).

The shared services on the test machine are never stopped: a test breaks its own proxy instead.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpProxy:
    """Forwards every connection to ``upstream``; ``cut()`` drops the open ones and resets new ones until
    ``restore()``. ``connections`` counts the connections accepted."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._stopped = False
        self.connections = 0
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                refuse = self._cut
            if refuse:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> None:
        """Drop every open connection (reset) and reset new ones, as a database that went away."""
        with self._lock:
            self._cut = True
            victims = list(self._open)
        for s in victims:
            _reset(s)
            self._close(s)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()


def _reset(s: socket.socket) -> None:
    """Drop a connection at once, as when the other side died: no lingering data, and a thread blocked
    reading it (a pump) wakes up (a bare close() would leave the connection open until that read returns)."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


class SilentListener:
    """A port whose connections are taken and never answered: the client's connect succeeds and then every
    read waits, as with a hung service (or one whose packets are dropped after the handshake).
    ``connections`` counts the connections taken."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stopped = False
        self.connections = 0
        threading.Thread(target=self._accept, name="silent-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(client)  # kept open, never read from, never written to

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        for s in self._held:
            _reset(s)
