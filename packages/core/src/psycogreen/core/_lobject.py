# SPDX-License-Identifier: BSD-3-Clause
"""Large objects under a wait callback: psycopg2's ``lobject``, through ordinary queries.

psycopg2 refuses ``conn.lobject()`` under a wait callback (``EXC_IF_GREEN``,
``connection_type.c``): libpq's large-object calls (``lo_open``, ``lo_read``...) are
fast-path function calls that block. The server offers the same operations as SQL functions
(``lo_open``, ``loread``, ``lowrite``, ``lo_lseek64``, ``lo_tell64``, ``lo_truncate64``,
``lo_close``, ``lo_unlink``, ``lo_creat``, ``lo_create``), so here each operation is a query
run by psycopg2's ``execute()``, which waits through the callback like any other; data moves in
chunks of :data:`CHUNK` bytes, one query each, so the scheduler runs between them.
``lo_import``/``lo_export`` read or write the client's file in chunks the same way, as libpq's
do (``fe-lobj.c``).

The class is psycopg2's: :class:`GreenLargeObject` derives from
``psycopg2.extensions.lobject`` (a ``lobject_factory`` gets it mixed in right above psycopg2's
class, so the factory's overrides run first), with psycopg2's methods, attributes, mode
parsing and checks (``lobject_type.c``, ``lobject_int.c``) and its errors: a failure of a
large-object call is an ``OperationalError`` carrying the server's message (libpq's
``PQerrorMessage``, as psycopg2 raises it), the server's own exception as its ``__cause__``.

psycopg2 marks a large object stale once its transaction ends (``conn->mark``, bumped by
``commit()``, ``rollback()``, ``reset()`` and the two-phase commands); Python cannot read that
mark, so the connection's ``poll()`` counts the commands after which no transaction is open
(``_pollhook``), which is when psycopg2 bumps it.
"""

from __future__ import annotations

import operator
from typing import Any

import psycopg2
import psycopg2.extensions

from psycogreen.core import _pollhook
from psycogreen.core._bytesfill import Filler
from psycogreen.core._lobject_args import (
    INV_READ,
    INV_WRITE,
    LOBJECT_BINARY,
    LOBJECT_READ,
    LOBJECT_WRITE,
    optional_text,
    parse_mode,
    pgmode,
    text,
    type_name,
    unparse_mode,
    unsigned,
)
from psycogreen.core._lobject_io import CHUNK, LO64_SINCE, export_file, import_file, lo64, query

__all__ = ["CHUNK", "GreenLargeObject", "green_class", "lobject"]

_INT_MAX = (1 << 31) - 1
_INT_MIN = -(1 << 31)

_Lobject = psycopg2.extensions.lobject
_Connection = psycopg2.extensions.connection


def lobject(  # noqa: PLR0913, PLR0917 (psycopg2's signature)
    conn: _Connection,
    oid: int = 0,
    mode: str | None = "",
    new_oid: int = 0,
    new_file: str | None = None,
    factory: Any = None,  # noqa: ANN401 (a class or any callable)
) -> Any:  # noqa: ANN401 (the factory's type)
    """``conn.lobject()``: psycopg2's without a wait callback, a green one with."""
    if psycopg2.extensions.get_wait_callback() is None:
        args: list[Any] = [oid, mode, new_oid, new_file]  # as given: psycopg2 checks them
        if factory is not None:
            args.append(factory)
        return _Connection.lobject(conn, *args)
    # psycopg2's checks, in its order (connection_type.c: psyco_conn_lobject): its argument
    # parsing (PyArg's "|IzIzO", with its messages), then the connection's state.
    oid = unsigned(oid)
    new_oid = unsigned(new_oid)
    optional_text(mode, 2)
    optional_text(new_file, 4)
    if conn.closed:
        raise psycopg2.InterfaceError("connection already closed")
    if conn.async_:
        raise psycopg2.ProgrammingError("lobject cannot be used in asynchronous mode")
    if conn.status == psycopg2.extensions.STATUS_PREPARED:
        message = "lobject cannot be used with a prepared two-phase transaction"
        raise psycopg2.ProgrammingError(message)
    cls = green_class(factory)
    if new_file is not None:
        obj = cls(conn, oid, mode, new_oid, new_file)
    else:
        obj = cls(conn, oid, mode, new_oid)
    if not isinstance(obj, _Lobject):
        raise TypeError("lobject factory must be subclass of psycopg2.extensions.lobject")
    return obj


class _Transactions:
    """psycopg2's ``conn->mark`` for one connection: how many transactions have ended."""

    __slots__ = ("mark",)

    def __init__(self) -> None:
        self.mark = 0

    def __call__(self, conn: object) -> None:
        """After each command: none open means one just ended (or none was open)."""
        idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
        if isinstance(conn, _Connection) and conn.get_transaction_status() == idle:
            self.mark += 1


def _transactions(conn: _Connection) -> _Transactions:
    watcher = _pollhook.watchers.get(id(conn))
    if isinstance(watcher, _Transactions):
        return watcher
    transactions = _Transactions()
    _pollhook.observe(conn, transactions)
    return transactions


class _State:
    """What psycopg2's ``lobjectObject`` holds (``lobject.h``)."""

    __slots__ = ("conn", "fd", "mark", "mode", "oid", "smode", "transactions")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.transactions = _transactions(conn)
        self.mark = self.transactions.mark
        self.fd = -1
        self.oid = 0
        self.mode = 0
        self.smode: str | None = None

    def closed(self) -> bool:
        return self.fd < 0 or bool(self.conn.closed)

    def stale(self) -> bool:
        # The second test also catches a transaction ended while no callback was installed.
        return (
            self.transactions.mark != self.mark
            or self.conn.status == psycopg2.extensions.STATUS_READY
        )


class GreenLargeObject(_Lobject):
    """psycopg2's large object, its operations run as queries that wait through the callback.

    ``conn.lobject()`` returns one on a guarded connection while a wait callback is installed.
    Same constructor, methods, attributes and errors as ``psycopg2.extensions.lobject``;
    reads and writes move :data:`CHUNK` bytes per query.

    .. versionadded:: 1.0
    """

    # psycopg2's own initialiser is never called: it would open the object with libpq's
    # blocking calls. Every method and attribute of psycopg2's class is redefined here, so
    # none of its C code runs on this object's (empty) C fields.

    def __init__(
        self,
        conn: object,  # anything, refused below with psycopg2's TypeError
        oid: int = 0,
        mode: str | None = None,
        new_oid: int = 0,
        new_file: str | None = None,
    ) -> None:
        """Open large object ``oid``, or create one (``oid`` 0): psycopg2's ``lobject()``."""
        if not isinstance(conn, _Connection):
            message = f"argument 1 must be psycopg2.extensions.connection, not {type_name(conn)}"
            raise TypeError(message)
        oid = unsigned(oid)
        new_oid = unsigned(new_oid)
        smode = optional_text(mode, 3) or ""
        new_file = optional_text(new_file, 5)
        if conn.autocommit:
            raise psycopg2.ProgrammingError("can't use a lobject outside of transactions")
        self._psycogreen = state = _State(conn)
        value = parse_mode(smode)
        if oid == 0:
            # A new object is opened for writing, whatever the mode (lobject_int.c).
            value = (value & ~LOBJECT_READ) | LOBJECT_WRITE
            flags = pgmode(value)
            if new_file is not None:
                state.oid = import_file(conn, new_file)
            elif new_oid:
                state.oid = query(conn, "SELECT lo_create(%s::oid)", (new_oid,))
            else:
                state.oid = query(conn, "SELECT lo_creat(%s)", (INV_READ | INV_WRITE,))
        else:
            state.oid = oid
            flags = pgmode(value)
        if flags:
            state.fd = query(conn, "SELECT lo_open(%s::oid, %s)", (state.oid, flags))
        state.mode = value
        state.smode = unparse_mode(value)

    def _check(self) -> _State:
        """psycopg2's EXC_IF_LOBJ_CLOSED, EXC_IF_LOBJ_LEVEL0, EXC_IF_LOBJ_UNMARKED."""
        state = self._psycogreen
        if state.closed():
            raise psycopg2.InterfaceError("lobject already closed")
        if state.conn.autocommit:
            raise psycopg2.ProgrammingError("can't use a lobject outside of transactions")
        if state.stale():
            raise psycopg2.ProgrammingError("lobject isn't valid anymore")
        return state

    # -- attributes ---------------------------------------------------------------------------

    @property
    def oid(self) -> int:
        """The backend OID associated to this lobject."""
        return self._psycogreen.oid

    @property
    def mode(self) -> str | None:
        """Open mode."""
        return self._psycogreen.smode

    @property
    def closed(self) -> bool:
        """The if the large object is closed (no file-like methods)."""
        return self._psycogreen.closed()

    def __repr__(self) -> str:
        """psycopg2's: ``<lobject object at 0x...; closed: 0>``."""
        return f"<lobject object at {id(self):#x}; closed: {int(self.closed)}>"

    __str__ = __repr__

    # -- file-like methods --------------------------------------------------------------------

    def read(self, size: int = -1) -> Any:  # noqa: ANN401 (str or bytes, by mode)
        """Read at most ``size`` bytes or to the end of the large object."""
        size = operator.index(size)
        state = self._check()
        conn = state.conn
        data = self._read(state, size)
        if state.mode & LOBJECT_BINARY:
            return data
        return data.decode(_codec(conn))

    def _read(self, state: _State, size: int) -> bytes:
        """Up to ``size`` bytes (all, if negative), a query per :data:`CHUNK`."""
        conn = state.conn
        fd = state.fd
        first = min(size, CHUNK) if size >= 0 else CHUNK
        data = bytes(query(conn, "SELECT loread(%s, %s)", (fd, first)))
        if len(data) < first or len(data) == size:
            return data  # all of it in one query: the usual case
        # More to come: find out how much, as psycopg2 does for a read to the end (a tell and
        # two seeks), to fill one result as the pieces arrive (``_bytesfill``).
        where = lo64(conn, "tell", fd)
        end = lo64(conn, "lseek", fd, 0, 2)
        lo64(conn, "lseek", fd, where, 0)
        left = max(end - where, 0)
        if size >= 0:
            left = min(left, size - len(data))
        result = Filler(len(data) + left)
        result.add(data)
        while left > 0:
            piece = bytes(query(conn, "SELECT loread(%s, %s)", (fd, min(CHUNK, left))))
            if not piece:
                break
            result.add(piece)
            left -= len(piece)
        return result.result()

    def write(self, data: Any) -> int:  # noqa: ANN401 (str or bytes)
        """Write a string or bytes to the large object; return the bytes written."""
        state = self._check()
        conn = state.conn
        if isinstance(data, str):
            data = data.encode(_codec(conn))
        elif not isinstance(data, bytes):
            message = f"lobject.write requires a string; got {type_name(data)} instead"
            raise TypeError(message)
        view = memoryview(data)
        written = 0
        for start in range(0, len(view), CHUNK) or (0,):
            chunk = view[start : start + CHUNK]
            written += query(conn, "SELECT lowrite(%s, %s)", (state.fd, chunk))
        return written

    def seek(self, offset: int, whence: int = 0) -> int:
        """Set the lobject's current position; return it."""
        offset = operator.index(offset)
        whence = operator.index(whence)
        state = self._check()
        conn = state.conn
        if conn.server_version < LO64_SINCE and not _INT_MIN <= offset <= _INT_MAX:
            message = (
                f"offset out of range ({offset}): server version {conn.server_version} "
                "does not support the lobject 64 API"
            )
            raise psycopg2.NotSupportedError(message)
        return lo64(conn, "lseek", state.fd, offset, whence)

    def tell(self) -> int:
        """Return the lobject's current position."""
        state = self._check()
        return lo64(state.conn, "tell", state.fd)

    def truncate(self, len: int = 0) -> None:  # noqa: A002 (psycopg2's keyword)
        """Truncate (or extend with zeroes) the large object to ``len`` bytes."""
        length = operator.index(len)
        state = self._check()
        conn = state.conn
        if conn.server_version < LO64_SINCE and length > _INT_MAX:
            message = (
                f"len out of range ({length}): server version {conn.server_version} "
                "does not support the lobject 64 API"
            )
            raise psycopg2.NotSupportedError(message)
        lo64(conn, "truncate", state.fd, length)

    def close(self) -> None:
        """Close the lobject: a no-op once closed, or once its transaction has ended."""
        state = self._psycogreen
        # File-like objects close any number of times; the end of the transaction closed it
        # on the server already (lobject_type.c: psyco_lobj_close).
        if state.closed() or state.conn.autocommit or state.stale():
            return
        fd, state.fd = state.fd, -1
        query(state.conn, "SELECT lo_close(%s)", (fd,))

    def unlink(self) -> None:
        """Close, then remove the large object (also a closed or stale one)."""
        state = self._psycogreen
        conn = state.conn
        if not (state.closed() or conn.autocommit or state.stale()):
            fd, state.fd = state.fd, -1
            query(conn, "SELECT lo_close(%s)", (fd,))
        query(conn, "SELECT lo_unlink(%s::oid)", (state.oid,))

    def export(self, filename: str) -> None:
        """Write the large object's content to the client's file ``filename``."""
        filename = text(filename, 1)
        state = self._psycogreen
        if state.conn.autocommit:
            raise psycopg2.ProgrammingError("can't use a lobject outside of transactions")
        export_file(state.conn, state.oid, filename)


def _codec(conn: _Connection) -> str:
    return str(psycopg2.extensions.encodings.get(conn.encoding, "utf-8"))


_classes: dict[object, object] = {}  # factory -> what green_class() made of it


def green_class(factory: Any) -> Any:  # noqa: ANN401 (a class, or a callable as given)
    """The class (or callable) that makes the large objects of ``factory``.

    psycopg2's class: :class:`GreenLargeObject`. A subclass of it: the subclass with
    :class:`GreenLargeObject` mixed in right above psycopg2's class, so that its overrides run
    first. Anything else is called as psycopg2 calls it (a function building psycopg2's own
    ``lobject`` blocks in libpq's calls).
    """
    if factory is None or factory is _Lobject:
        return GreenLargeObject
    cls = _classes.get(factory)
    if cls is not None:
        return cls
    if (
        not isinstance(factory, type)
        or not issubclass(factory, _Lobject)
        or issubclass(factory, GreenLargeObject)
    ):
        cls = factory
    else:
        namespace = {
            "__module__": factory.__module__,
            "__qualname__": factory.__qualname__,
            "__doc__": factory.__doc__,
        }
        cls = type(factory.__name__, (factory, GreenLargeObject), namespace)
    _classes[factory] = cls
    return cls
