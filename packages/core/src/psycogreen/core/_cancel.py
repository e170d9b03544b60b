# SPDX-License-Identifier: BSD-3-Clause
"""Cancel a connection's running statement on the server without blocking the scheduler.

psycopg2's ``conn.cancel()`` calls ``PQcancel()`` without releasing the GIL: a network round
trip (minutes against a black-holed server) during which no greenlet runs (psycopg2
``connection_type.c: psyco_conn_cancel``). Closing the socket is no substitute: the server keeps
running the statement to its end, holding its locks (PostgreSQL notices a gone client only when
it next talks to it). So core sends the cancel request itself, waiting through the backend's
own waits, with a bound of its own:

- libpq >= 17: the non-blocking cancel API (``PQcancelCreate``/``PQcancelStart``/``PQcancelPoll``),
  which reuses the connection's resolved address and its TLS/GSS settings;
- older libpq: the cancel key read from ``PQgetCancel()``'s ``pg_cancel`` (stable in libpq 9.x to
  17, checked against the connection's backend pid) and the 16-byte CancelRequest message of the
  frontend/backend protocol sent on a non-blocking socket.
"""

from __future__ import annotations

import _socket
import ctypes
import errno
import socket
import struct
import sys
import time

from psycogreen.core import _libpq
from psycogreen.core._types import WaitFunc

__all__ = [
    "DEFAULT_CANCEL_TIMEOUT",
    "Request",
    "cancel",
    "cancel_timeout",
    "prepare",
    "set_cancel_timeout",
]

#: Seconds a cancel request may take before core gives up on it.
DEFAULT_CANCEL_TIMEOUT = 2.0

# The values of libpq's PostgresPollingStatusType, from libpq-fe.h:
_POLLING_FAILED = 0
_POLLING_READING = 1
_POLLING_WRITING = 2
_POLLING_OK = 3

# CancelRequest: Int32 length 16, Int32 80877102, Int32 pid, Int32 key (protocol.sgml).
_CANCEL_REQUEST_CODE = 80877102
_SOCKADDR_STORAGE = 128


class _SockAddr(ctypes.Structure):
    # libpq's SockAddr: struct sockaddr_storage (128 bytes, 8-byte aligned) + socklen_t.
    _fields_ = (("storage", ctypes.c_uint64 * (_SOCKADDR_STORAGE // 8)), ("salen", ctypes.c_uint))


# struct pg_cancel { SockAddr raddr; int be_pid; int be_key; ... } (libpq-int.h, 9.x to 17)
_PID_OFFSET = ctypes.sizeof(_SockAddr)
_BSD_SOCKADDR = sys.platform == "darwin" or "bsd" in sys.platform

# Where to send a pre-17 CancelRequest: (address family, address, the 16-byte packet).
_Target = tuple[int, str | tuple[str, int] | tuple[str, int, int, int], bytes]


def set_cancel_timeout(seconds: float) -> None:
    """Set how long a server-side cancel may take before psycogreen gives up (default 2 s).

    The bound covers sending the cancel request and, after a timeout, the server's answer to
    it: a server that does not answer within it is treated as gone and the connection is closed.

    .. versionadded:: 1.0
    """
    global _cancel_timeout  # noqa: PLW0603 (one process-wide setting, like the callback itself)
    if not seconds > 0:
        message = f"cancel timeout must be a positive number of seconds, not {seconds!r}"
        raise ValueError(message)
    _cancel_timeout = float(seconds)


def cancel_timeout() -> float:
    """The bound of :func:`set_cancel_timeout`, in seconds."""
    return _cancel_timeout


_cancel_timeout = DEFAULT_CANCEL_TIMEOUT


class Request:
    """One cancel request for a connection's running statement, prepared while it is alive.

    Preparing reads what the request needs from the live ``PGconn`` (libpq >= 17: a
    ``PGcancelConn``, which copies the connection's address and options; older: the address and
    cancel key). Sending needs the connection no more, so it may finish after psycopg2 has
    closed it, in a task of its own.
    """

    def __init__(self, lib: _libpq.LibPQ, ptr: int) -> None:
        """Prepare the request for the ``PGconn*`` ``ptr``."""
        self._lib = lib
        self._cancel_conn: int | None = None
        self._target: _Target | None = None
        if lib.has_cancel17:
            self._cancel_conn = lib.PQcancelCreate(ptr) or None
        else:
            self._target = _cancel_target(lib, ptr)

    @property
    def ready(self) -> bool:
        """Whether the request can be sent at all."""
        return self._cancel_conn is not None or self._target is not None

    def send(self, wait_read: WaitFunc, wait_write: WaitFunc, deadline: float) -> bool:
        """Send the request, waiting until ``deadline`` at most; free its resources either way.

        :return: ``True`` once the server took the request.
        """
        try:
            if self._cancel_conn is not None:
                return _cancel17(self._lib, self._cancel_conn, wait_read, wait_write, deadline)
            if self._target is not None:
                return _cancel_legacy(self._target, wait_read, wait_write, deadline)
            return False
        finally:
            self.close()

    def close(self) -> None:
        """Free the request's resources without sending it (a no-op once sent)."""
        cancel_conn, self._cancel_conn, self._target = self._cancel_conn, None, None
        if cancel_conn is not None:
            self._lib.PQcancelFinish(cancel_conn)


def prepare(conn: object) -> Request | None:
    """A cancel request for ``conn``'s running statement; ``None`` if it cannot be made.

    ``None`` for a closed connection, or a libpq that cannot be reached.
    """
    lib = _libpq.load()
    if lib is None:
        return None
    ptr = _libpq.pgconn(conn, lib)
    if ptr is None:
        return None
    request = Request(lib, ptr)
    return request if request.ready else None


def cancel(
    conn: object,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    timeout: float | None = None,
) -> bool:
    """Ask the server to cancel ``conn``'s running statement; wait at most ``timeout`` seconds.

    :param timeout: the bound; :func:`cancel_timeout` if ``None``.
    :return: ``True`` once the server took the request, ``False`` if it could not be sent
        in time (or at all: a closed connection, a libpq that cannot be reached).
    """
    request = prepare(conn)
    if request is None:
        return False
    bound = _cancel_timeout if timeout is None else timeout
    return request.send(wait_read, wait_write, time.monotonic() + bound)


def _cancel17(
    lib: _libpq.LibPQ, cancel_conn: int, wait_read: WaitFunc, wait_write: WaitFunc, deadline: float
) -> bool:
    if not lib.PQcancelStart(cancel_conn):
        return False
    while True:
        state = lib.PQcancelPoll(cancel_conn)
        if state == _POLLING_OK:
            return True
        if state not in (_POLLING_READING, _POLLING_WRITING):
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        wait = wait_read if state == _POLLING_READING else wait_write
        if not wait(lib.PQcancelSocket(cancel_conn), remaining):
            return False


def _cancel_legacy(
    target: _Target, wait_read: WaitFunc, wait_write: WaitFunc, deadline: float
) -> bool:
    family, address, packet = target
    # The C socket type: never the class a monkey-patcher put into the socket module, since
    # this socket is waited on through the backend like any other fd.
    sock = _socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)  # noqa: FBT003 (the stdlib's signature)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            return False
        if err:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not wait_write(sock.fileno(), remaining):
                return False
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return False
        sent = sock.send(packet)  # 16 bytes always fit an empty send buffer
        if sent != len(packet):
            return False
        # The postmaster closes the connection once it has processed the request (libpq's
        # PQcancel waits for that too): after it, the backend has been signalled.
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not wait_read(sock.fileno(), remaining):
            return False
        try:
            sock.recv(1)
        except OSError:
            pass
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _cancel_target(lib: _libpq.LibPQ, ptr: int) -> _Target | None:
    """Read address and key from ``PQgetCancel()``; ``None`` if they cannot be trusted."""
    pg_cancel = lib.PQgetCancel(ptr)
    if not pg_cancel:
        return None
    try:
        raw = ctypes.string_at(pg_cancel, _PID_OFFSET + 8)
    finally:
        lib.PQfreeCancel(pg_cancel)
    pid, key = struct.unpack_from("=ii", raw, _PID_OFFSET)
    if pid != lib.PQbackendPID(ptr):
        return None  # not the layout this code knows
    (salen,) = struct.unpack_from("=I", raw, _SOCKADDR_STORAGE)
    family = raw[1] if _BSD_SOCKADDR else struct.unpack_from("=H", raw, 0)[0]
    address: str | tuple[str, int] | tuple[str, int, int, int]
    if family == socket.AF_INET:
        port = struct.unpack_from("!H", raw, 2)[0]
        address = (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    elif family == socket.AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        (scope,) = struct.unpack_from("=I", raw, 24)
        address = (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope)
    elif family == getattr(socket, "AF_UNIX", None):
        path = raw[2:salen] if salen > 2 else raw[2:_SOCKADDR_STORAGE]
        address = path.split(b"\0", 1)[0].decode(errors="surrogateescape")
    else:
        return None
    packet = struct.pack("!iiii", 16, _CANCEL_REQUEST_CODE, pid, key)
    return family, address, packet
