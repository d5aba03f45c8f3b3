"""Real TCP listeners on 127.0.0.1 that stall an SSH client at each stage of a connection.

- Blackhole: a listening socket whose accept queue is full, so the kernel leaves new SYNs unanswered
  (what a powered-off device or a dropping firewall looks like from here).
- SilentListener: accepts the connection and never says a word (no SSH banner).
- BannerThenSilence: a proxy in front of a real sshd that passes the server's banner line, then nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closed = threading.Event()

    def _serve_forever(self) -> None:
        """Accept connections in a thread, each handed to ``_serve``."""
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
                self._serve(conn)
            except OSError:
                return

    def _serve(self, conn: socket.socket) -> None:
        self._held.append(conn)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        for held in [*self._held, self.sock]:
            with contextlib.suppress(OSError):
                held.close()


class Blackhole(_Listener):
    def __init__(self) -> None:
        super().__init__()
        self.sock.listen(0)
        for _ in range(3):  # one connection fills a backlog-0 queue; the others are left waiting
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._held.append(filler)

    def stalls(self, seconds: float = 0.5) -> bool:
        """Whether a new connection really gets no answer (checked, not assumed)."""
        probe = socket.socket()
        probe.settimeout(seconds)
        try:
            probe.connect(("127.0.0.1", self.port))
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            probe.close()
        return False


class SilentListener(_Listener):
    """Holds every connection open and never writes to it."""

    def __init__(self) -> None:
        super().__init__()
        self._serve_forever()


class BannerThenSilence(_Listener):
    """Forwards the client's bytes to ``upstream_port`` and, back, only the server's first line."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self._serve_forever()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._held += [client, upstream]
        threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, b"\n"), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, stop_after: bytes | None) -> None:
        try:
            while data := source.recv(65536):
                if stop_after is not None and stop_after in data:
                    sink.sendall(data[: data.index(stop_after) + 1])
                    break
                sink.sendall(data)
        except OSError:
            return
