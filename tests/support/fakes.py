# SPDX-License-Identifier: BSD-3-Clause
"""A scripted connection, for the poll states a real server cannot be made to produce."""

from __future__ import annotations

import socket
from collections.abc import Iterable


class FakeConnection:
    """Answers ``poll()`` from a script; ``fileno()`` is a real, always-writable socket.

    A script entry is a POLL_* value (or any int, to test bad states) or an exception to raise.
    """

    def __init__(self, script: Iterable[int | BaseException], *, readable: bool = True) -> None:
        self.script = list(script)
        self.polls = 0
        self.status = 1  # STATUS_READY: not connecting
        self._a, self._b = socket.socketpair()
        if readable:
            self._b.send(b"x")  # the fd stays readable

    def poll(self) -> int:
        self.polls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def fileno(self) -> int:
        return self._a.fileno()

    def close(self) -> None:
        self._a.close()
        self._b.close()


class FakeFactory:
    """Makes scripted connections for one test (``fakes(POLL_READ, POLL_OK)``), closed after it."""

    def __init__(self) -> None:
        self.made: list[FakeConnection] = []

    def __call__(self, *script: int | BaseException) -> FakeConnection:
        conn = FakeConnection(script)
        self.made.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.made:
            conn.close()
