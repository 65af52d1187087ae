"""A TCP relay on 127.0.0.1 (port 0) in front of a real server, which tests can take down.

Taking it down cuts every relayed connection and refuses new ones (accepted, then closed at
once), as a server that went away would; bringing it up relays again. It runs on threads of its
own, so it keeps relaying whatever the test's event loop is doing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._up = True
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.refused = 0
        self._acceptor = threading.Thread(target=self._accept, name="tcp-relay", daemon=True)
        self._acceptor.start()

    def down(self) -> None:
        """Cut every connection and refuse new ones until :meth:`up`."""
        with self._lock:
            self._up = False
            cut = list(self._open)
            self._open.clear()
        for sock in cut:
            _close(sock)

    def up(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self.down()
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@contextmanager
def relaying(target_host: str, target_port: int) -> Iterator[TcpRelay]:
    relay = TcpRelay(target_host, target_port)
    try:
        yield relay
    finally:
        relay.close()
