# SPDX-License-Identifier: BSD-3-Clause
"""A query deadline owned by psycogreen, scoped to the calling task."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["current_timeout", "timeout"]

# greenlet >= 0.4.17 gives every greenlet its own contextvars context, so a deadline set in
# one greenlet is invisible to the others sharing the OS thread (gevent and eventlet alike).
_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "psycogreen_timeout", default=None
)

#: The timeout in force for the current task, or ``None``.
current_timeout = _timeout.get


@contextlib.contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Bound every psycopg2 operation in the block to ``seconds``.

    An operation (a query, a commit, a connect, a fetch from a named cursor) that is still
    running when its time is up is cancelled on the server: psycopg2 then raises
    ``psycopg2.errors.QueryCanceled`` and the connection stays usable after ``rollback()``.
    A connect that times out raises ``psycopg2.OperationalError``. ``None`` lifts an
    enclosing limit. The limit applies to each operation, not to the block as a whole.

    :param seconds: the limit, a positive number of seconds, or ``None``.
    :raises ValueError: ``seconds`` is not positive.

    .. versionadded:: 1.0
    """
    if seconds is not None and not seconds > 0:
        message = f"timeout must be a positive number of seconds or None, not {seconds!r}"
        raise ValueError(message)
    token = _timeout.set(seconds)
    try:
        yield
    finally:
        _timeout.reset(token)
