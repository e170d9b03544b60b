# SPDX-License-Identifier: BSD-3-Clause
"""A TCP proxy on 127.0.0.1 that a test can freeze: a black-holed server, on demand.

Run as its own (never monkey-patched) process: ``python -m tests.support.proxy HOST PORT``.
It prints the port it listens on, then obeys commands on stdin, one per line, answering each
on stdout:

- ``freeze``: stop forwarding and accepting; every socket stays open, so clients (and cancel
  requests, which connect to the same address) see a server that never answers;
- ``thaw``: forward again, including what piled up meanwhile;
- ``thaw-after SECONDS``: thaw then, by itself (for a client that cannot send ``thaw``: one
  blocked with the GIL held, in psycopg2's ``conn.cancel()``);
- ``delay SECONDS``: from now on, hold each new connection that long before connecting it
  upstream (a slow server, or a slow network, at connect time);
- ``count``: the number of upstream connections open (a backend each, once started);
- ``quit``.

:class:`Proxy` starts and drives one from a test or scenario.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


class Proxy:
    """A running proxy process, driven through its stdin."""

    def __init__(self, host: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.proxy", host, str(port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._read())

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            message = "the proxy process ended"
            raise RuntimeError(message)
        return line.strip()

    def _command(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def freeze(self) -> None:
        self._command("freeze")

    def thaw(self) -> None:
        self._command("thaw")

    def thaw_after(self, seconds: float) -> None:
        self._command(f"thaw-after {seconds}")

    def delay(self, seconds: float) -> None:
        self._command(f"delay {seconds}")

    def count(self) -> int:
        return int(self._command("count"))

    def close(self) -> None:
        try:
            self._command("quit")
        except (OSError, RuntimeError):
            pass
        self.proc.wait(5)

    def __enter__(self) -> Proxy:  # noqa: PYI034 (3.10 has no typing.Self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(target: tuple[str, int]) -> None:  # noqa: PLR0912 (one small event loop)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)

    sel = selectors.DefaultSelector()
    peers: dict[socket.socket, socket.socket] = {}
    upstreams: set[socket.socket] = set()
    frozen = False

    def close_pair(sock: socket.socket) -> None:
        for s in (sock, peers.get(sock)):
            if s is None:
                continue
            peers.pop(s, None)
            upstreams.discard(s)
            if not frozen:
                sel.unregister(s)
            s.close()

    def watch(on: bool) -> None:
        for s in [listener, *peers]:
            if on:
                sel.register(s, selectors.EVENT_READ, "accept" if s is listener else "data")
            else:
                sel.unregister(s)

    delay = 0.0
    held: list[tuple[float, socket.socket]] = []  # (due, client) of delayed connections

    def accept() -> bool:
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return False
        client.setblocking(True)
        if delay > 0:
            held.append((time.monotonic() + delay, client))
            return True
        connect(client)
        return True

    def connect(client: socket.socket) -> None:
        upstream = socket.create_connection(target)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(s, selectors.EVENT_READ, "data")
        peers[client], peers[upstream] = upstream, client
        upstreams.add(upstream)

    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    watch(True)

    def thaw() -> None:
        nonlocal frozen
        frozen = False
        watch(True)
        # take the connections made meanwhile now, so that a "count" after the answer
        # includes them
        while accept():
            pass

    thaw_at: float | None = None
    while True:
        dues = [due for due in (thaw_at, held[0][0] if held and not frozen else None) if due]
        wait = max(0.0, min(dues) - time.monotonic()) if dues else None
        events = sel.select(wait)
        while held and not frozen and held[0][0] <= time.monotonic():
            connect(held.pop(0)[1])
        if thaw_at is not None and time.monotonic() >= thaw_at:
            thaw_at = None
            if frozen:
                thaw()
            continue
        for key, _ in events:
            if key.data == "stdin":
                command, _, argument = sys.stdin.readline().strip().partition(" ")
                if command in {"quit", ""}:
                    return
                if command == "freeze" and not frozen:
                    frozen = True
                    watch(False)
                elif command == "thaw" and frozen:
                    thaw()
                elif command == "thaw-after":
                    thaw_at = time.monotonic() + float(argument)
                elif command == "delay":
                    delay = float(argument)
                print(len(upstreams) if command == "count" else command, flush=True)
            elif key.data == "accept":
                accept()
            else:
                sock: Any = key.fileobj
                if sock not in peers:
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        peers[sock].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    close_pair(sock)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    _serve((host, port))


if __name__ == "__main__":
    main()
