# SPDX-License-Identifier: BSD-3-Clause
"""Query deadlines owned by psycogreen: per block of code, and per connection.

On expiry the statement is cancelled on the server and psycopg2 raises the server's
``QueryCanceled``; the connection stays usable after ``rollback()`` (see ``_poll.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator

__all__ = [
    "UNSET",
    "block_timeout",
    "connection_timeouts",
    "current_timeout",
    "get_timeout",
    "limit",
    "set_timeout",
    "timeout",
]

#: The context variable's value when no ``timeout()`` block is active. ``None`` is taken: it
#: means a block lifted every limit. Timeouts are positive, so 0.0 cannot be mistaken for one.
UNSET = 0.0

# greenlet >= 0.4.17 gives every greenlet its own contextvars context, so a deadline set in
# one greenlet is invisible to the others sharing the OS thread (gevent and eventlet alike).
_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "psycogreen_timeout", default=UNSET
)

#: The limit of the innermost ``timeout()`` block: a number, ``None`` (lifted) or ``UNSET``.
block_timeout = _timeout.get


def current_timeout() -> float | None:
    """The limit of the innermost ``timeout()`` block, ``None`` if there is none (or no limit)."""
    value = _timeout.get()
    return None if value == UNSET else value


#: Per-connection limits (:func:`set_timeout`), keyed by ``id(conn)``: the wait callback's
#: lookup is one dict access, and its "is any set?" check costs no call. An entry goes with its
#: connection (a weakref finalizer runs before the id can be reused): a forgotten connection
#: neither stays alive for its setting nor passes it on.
connection_timeouts: dict[int, float] = {}
_finalizers: dict[int, weakref.finalize[[int], object]] = {}


def limit(
    key: int, bound: float | None = None, connect_timeout: float | None = None
) -> float | None:
    """The time limit, in seconds, of the operation now starting on the connection ``id`` ``key``.

    The one statement of the precedence of psycogreen's five ways to set a limit; the wait
    callback, COPY and connect all ask here:

    1. ``bound``: the ``timeout`` argument of the wait callback (bound with
       :func:`functools.partial`);
    2. the innermost :func:`timeout` block (``None`` there lifts every limit, 3 and 4 included);
    3. the connection's own, from :func:`set_timeout` or ``psycopg2.connect(...,
       psycogreen_timeout=...)``;
    4. ``connect_timeout``: libpq's, for one connection attempt only; the shorter of it and
       the limit found above applies.

    ``None``: no limit.
    """
    if bound is None:
        bound = _timeout.get()
        if bound == UNSET:
            bound = connection_timeouts.get(key) if connection_timeouts else None
        elif bound is None:
            return None  # a timeout(None) block lifts every limit
    if connect_timeout is not None and (bound is None or connect_timeout < bound):
        return connect_timeout
    return bound


def _forget(key: int) -> None:
    connection_timeouts.pop(key, None)
    _finalizers.pop(key, None)


def _check(seconds: float | None) -> None:
    if seconds is not None and not seconds > 0:
        message = f"timeout must be a positive number of seconds or None, not {seconds!r}"
        raise ValueError(message)


@contextlib.contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Bound every psycopg2 operation in the block to ``seconds``.

    An operation (a query, a commit, a connect, a fetch from a named cursor) that is still
    running when its time is up is cancelled on the server: psycopg2 then raises
    ``psycopg2.errors.QueryCanceled`` and the connection stays usable after ``rollback()``.
    A connect that times out raises ``psycopg2.OperationalError``. ``None`` lifts every
    limit for the block, the connections' own (:func:`set_timeout`) included. The limit
    applies to each operation, not to the block as a whole.

    :param seconds: the limit, a positive number of seconds, or ``None``.
    :raises ValueError: ``seconds`` is not positive.

    .. versionadded:: 1.0
    """
    _check(seconds)
    token = _timeout.set(seconds)
    try:
        yield
    finally:
        _timeout.reset(token)


def set_timeout(conn: object, seconds: float | None) -> None:
    """Bound every operation on ``conn`` to ``seconds`` (``None`` removes the limit).

    The same deadline as :func:`timeout`, attached to one connection: on expiry the
    statement is cancelled on the server, psycopg2 raises ``QueryCanceled`` and the
    connection stays usable after ``rollback()``. A :func:`timeout` block, or the
    ``timeout`` argument bound to the wait callback, takes precedence. A connection opened
    with ``psycopg2.connect(..., psycogreen_timeout=seconds)`` (once psycopg2 is patched)
    has it set from the start, its connect included.

    :param conn: a psycopg2 connection.
    :raises ValueError: ``seconds`` is not positive.

    .. versionadded:: 1.0
    """
    _check(seconds)
    key = id(conn)
    if seconds is None:
        finalizer = _finalizers.get(key)
        if finalizer is not None:
            finalizer()  # detaches it and forgets the entry
        return
    if key not in _finalizers:
        _finalizers[key] = weakref.finalize(conn, _forget, key)
    connection_timeouts[key] = float(seconds)


def get_timeout(conn: object) -> float | None:
    """The limit :func:`set_timeout` gave ``conn``, or ``None``.

    .. versionadded:: 1.0
    """
    return connection_timeouts.get(id(conn))
