# SPDX-License-Identifier: BSD-3-Clause
"""The soak's TCP proxy on 127.0.0.1: a network that can be frozen, and a server that can go.

Run as a process of its own: ``python bench/soak_proxy.py HOST PORT``. It prints the port it
listens on, then obeys commands on stdin, one a line, answering each on stdout:

- ``freeze SECONDS``: stop forwarding, accepting and noticing closes, in both directions, for
  that long (then it thaws by itself; a freeze while frozen extends it). Every socket stays
  open: clients, and cancel requests, which connect to the same address, meet a server that
  never answers. What piles up meanwhile is forwarded once thawed;
- ``thaw``: forward again now;
- ``count``: the number of connection pairs open;
- ``quit``.

Unlike a proxy for a test of one query, this one outlives its server: when the upstream
refuses (a restart), the client's connection is closed at once, as a server that is down
would do. Sockets are non-blocking with a buffer per direction, so a peer that stops reading
never stalls the others.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import time

_CHUNK = 65536


class _Side:
    """One socket of a pair and the bytes waiting to be written to it."""

    __slots__ = ("out", "peer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.peer: _Side | None = None


class Proxy:
    """The event loop: a listener, pairs of sides, and stdin for commands."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.sides: dict[socket.socket, _Side] = {}
        self.frozen_until = 0.0
        self.frozen = False

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    # --- registration -------------------------------------------------------------------------

    def _mask(self, side: _Side) -> int:
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if side.out else 0)

    def _watch(self, side: _Side) -> None:
        if self.frozen:
            return
        key = self.sel.get_map().get(side.sock)
        mask = self._mask(side)
        if key is None:
            self.sel.register(side.sock, mask, side)
        elif key.events != mask:
            self.sel.modify(side.sock, mask, side)

    def _unwatch_all(self) -> None:
        for sock in [self.listener, *self.sides]:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(sock)

    def _watch_all(self) -> None:
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        for side in self.sides.values():
            self._watch(side)

    # --- pairs --------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                # Loopback: a refusal (the server restarting) or a success is immediate.
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            a, b = _Side(client), _Side(upstream)
            a.peer, b.peer = b, a
            for side in (a, b):
                side.sock.setblocking(False)
                side.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sides[side.sock] = side
                self._watch(side)

    def _close(self, side: _Side) -> None:
        for s in (side, side.peer):
            if s is None or s.sock not in self.sides:
                continue
            del self.sides[s.sock]
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(s.sock)
            s.sock.close()

    def _flush(self, side: _Side) -> bool:
        """Write what waits for ``side``; ``False`` if its socket is gone."""
        while side.out:
            try:
                sent = side.sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return False
            del side.out[:sent]
        return True

    def _readable(self, side: _Side) -> None:
        peer = side.peer
        assert peer is not None
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The other side gets what was already read for it, as far as it takes it now.
            self._flush(peer)
            self._close(side)
            return
        peer.out += data
        if not self._flush(peer):
            self._close(side)
            return
        self._watch(peer)

    def _writable(self, side: _Side) -> None:
        if not self._flush(side):
            self._close(side)
            return
        self._watch(side)

    # --- commands -----------------------------------------------------------------------------

    def _freeze(self, seconds: float) -> None:
        self.frozen_until = max(self.frozen_until, time.monotonic() + seconds)
        if not self.frozen:
            self._unwatch_all()
            self.frozen = True

    def _thaw(self) -> None:
        self.frozen_until = 0.0
        if self.frozen:
            self.frozen = False
            self._watch_all()

    def _command(self, line: str) -> bool:
        command, _, argument = line.strip().partition(" ")
        if command in {"quit", ""}:
            return False
        if command == "freeze":
            self._freeze(float(argument))
            answer = "frozen"
        elif command == "thaw":
            self._thaw()
            answer = "thawed"
        elif command == "count":
            answer = str(len(self.sides) // 2)
        else:
            answer = f"unknown {command}"
        print(answer, flush=True)
        return True

    def serve(self) -> None:
        self.sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
        self._watch_all()
        print(self.port, flush=True)
        while True:
            wait = None
            if self.frozen:
                wait = max(0.0, self.frozen_until - time.monotonic())
            events = self.sel.select(wait)
            if self.frozen and time.monotonic() >= self.frozen_until:
                self._thaw()
                continue
            for key, mask in events:
                if key.data == "stdin":
                    if not self._command(sys.stdin.readline()):
                        return
                    if self.frozen:
                        break  # the other events are stale now
                elif key.data is None:
                    self._accept()
                else:
                    side: _Side = key.data
                    if side.sock not in self.sides:
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._writable(side)
                    if mask & selectors.EVENT_READ and side.sock in self.sides:
                        self._readable(side)


def main() -> None:
    Proxy((sys.argv[1], int(sys.argv[2]))).serve()


if __name__ == "__main__":
    main()
