"""A loopback TCP proxy to a real redis-server that can stop forwarding bytes (a stall)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class StallProxy:
    """A loopback TCP proxy to a redis-server that can stop forwarding bytes.

    ``stall()`` keeps accepting and holding connections but moves no byte in
    either direction; ``stall_replies()`` forwards requests and holds the
    replies (the server acts, the client never hears back); ``resume()``
    forwards again, including what was held (as a healed network would).
    Bounded: at most ``max_conns`` connections; every thread polls a stop
    event; ``close()`` joins them.
    """

    def __init__(self, upstream_port: int, max_conns: int = 128) -> None:
        self.upstream_port = upstream_port
        self.max_conns = max_conns
        self.mode = "forward"  # "forward" | "stall" | "replies"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> StallProxy:
        self._spawn(self._accept_loop)
        return self

    def stall(self) -> None:
        self.mode = "stall"

    def stall_replies(self) -> None:
        self.mode = "replies"

    def resume(self) -> None:
        self.mode = "forward"

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in [self.listener, *socks]:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2)

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self.accepted >= self.max_conns:
                    client.close()
                    continue
                self.accepted += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
            except OSError:
                client.close()  # upstream down: like a refused connection
                continue
            with self._lock:
                self._socks += [client, upstream]
            self._spawn(self._pump, client, upstream, ("stall",))
            self._spawn(self._pump, upstream, client, ("stall", "replies"))

    def _pump(self, src: socket.socket, dst: socket.socket, held_in: tuple[str, ...]) -> None:
        try:
            while not self._stop.is_set():
                if self.mode in held_in:
                    time.sleep(0.01)  # hold: bytes wait in the kernel buffers
                    continue
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready or self.mode in held_in:  # re-check: stall() may have come meanwhile
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
