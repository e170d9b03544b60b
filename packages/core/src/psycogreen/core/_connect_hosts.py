# SPDX-License-Identifier: BSD-3-Clause
"""Connect host by host, with libpq's ``connect_timeout``, resolving names without blocking.

In green mode psycopg2 connects with ``PQconnectStart``/``PQconnectPoll``. That path ignores
``connect_timeout`` (libpq enforces it only in its blocking ``connectDBComplete``; psycopg2#944),
so a black-holed host waits for the kernel's TCP timeout, once per host of a multi-host DSN
(psycopg2#1253); and libpq resolves host names with a blocking ``getaddrinfo`` inside the
connect call, stopping every greenlet while DNS answers.

So, like psycopg 3, psycogreen connects host by host itself. The DSN is parsed by libpq
(``psycopg2.extensions.parse_dsn``) and what it leaves unset is taken from libpq's own defaults
(``PQconndefaults()``: the ``PG*`` environment variables, ``PGSERVICE``'s service). Each name is
resolved with ``socket.getaddrinfo`` (the scheduler's resolver once the program is
monkey-patched: core imports no scheduler), and each attempt is one single-address libpq
connection, ``host=<name> hostaddr=<address> port=<port>``, so that libpq still checks TLS
certificates and ``.pgpass`` against the name. Each attempt runs under core's deadline
(:func:`psycogreen.core.timeout`), which the wait callback enforces. A DSN naming a
``service=`` goes to libpq whole, in one attempt.
"""

from __future__ import annotations

import _socket
import random
import socket
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import psycopg2
import psycopg2.extensions

from psycogreen.core import _dsn, _libpq
from psycogreen.core._compat import attempt_error, check_psycopg, was_polled
from psycogreen.core._hostsfile import answered_locally, is_address
from psycogreen.core._observe import reports_attempt
from psycogreen.core._timeout import limit, timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["Attempt", "ConnectPlan", "connect_hosts", "connect_with", "plan_connect"]

C = TypeVar("C")

# libpq's compiled-in default port (DEF_PGPORT_STR), only used to name a host in messages: an
# empty port is passed on empty, and libpq substitutes its own default.
_DEFAULT_PORT = "5432"
# The options that decide where and how long to connect.
_WHERE = ("host", "hostaddr", "port", "connect_timeout", "target_session_attrs")
# No connection exists yet: no per-connection limit applies (no object has id 0).
_NO_CONNECTION = 0


@dataclass(frozen=True)
class Attempt:
    """One libpq connection attempt: a host slot, and the address to reach it at."""

    host: str
    """The host as given (a name, an address, a socket directory), ``""`` for libpq's default."""
    hostaddr: str
    """The numeric address to connect to, ``""`` to let libpq use ``host``."""
    port: str
    """The port as given, ``""`` for libpq's default."""

    def describe(self) -> str:
        """Name the server as libpq's own messages do (``connection to server at ...``)."""
        port = self.port or _DEFAULT_PORT
        if not self.hostaddr and _is_socket(self.host):
            return f'connection to server on socket "{self.host}/.s.PGSQL.{port}"'
        if not self.hostaddr and not self.host:
            return f"connection to server on the default socket, port {port}"
        if self.host and self.hostaddr and self.host != self.hostaddr:
            return f'connection to server at "{self.host}" ({self.hostaddr}), port {port}'
        return f'connection to server at "{self.hostaddr or self.host}", port {port}'


@dataclass
class ConnectPlan:
    """Where a DSN connects, worked out as libpq would, before any attempt is made."""

    params: dict[str, str]
    """The explicit parameters, passed on to every attempt (host options are replaced)."""
    slots: list[Attempt]
    """The host slots in the order libpq tries them (``hostaddr`` as given, not resolved)."""
    connect_timeout: float | None
    """Seconds per attempt (libpq: at least 2), ``None`` for no limit."""
    prefer_standby: bool = False
    load_balance: bool = False
    shuffle: Callable[[list[Any]], None] = field(default=random.shuffle, repr=False)

    @property
    def single(self) -> Attempt | None:
        """The only attempt, when the DSN can go to libpq as it is (one host, none to resolve)."""
        if len(self.slots) != 1 or self.prefer_standby:
            return None
        slot = self.slots[0]
        return slot if slot.hostaddr or not _needs_resolving(slot.host) else None


def connect_with(
    connect: Callable[..., C],
    dsn: str | None = None,
    **kwargs: Any,  # noqa: ANN401 (psycopg2.connect's)
) -> C:
    """Call ``connect`` (``psycopg2.connect`` or a wrapper of it) host by host.

    ``connect`` is called like ``psycopg2.connect``, once per attempt, with a single-address
    DSN and the same ``connection_factory``, ``cursor_factory`` and ``async``; every other
    keyword argument is merged into the DSN first, as ``psycopg2.connect`` does. An
    asynchronous connection (``async=True``) is made in one call: its user polls it.

    .. versionadded:: 1.0
    """
    passed = {
        key: kwargs.pop(key)
        for key in ("connection_factory", "cursor_factory", "async", "async_")
        if key in kwargs
    }
    if passed.get("async") or passed.get("async_"):
        return connect(dsn, **passed, **kwargs)
    full: str = psycopg2.extensions.make_dsn(dsn, **kwargs)  # psycopg2's errors, unchanged
    conn = connect_hosts(full, lambda single: connect(single, **passed))
    # conn.dsn as psycopg2 reports it for this string, not for the attempt's one-address one
    # (a guarded connection reports it: _guard.py).
    _dsn.remember(conn, full)
    return conn


def connect_hosts(dsn: str, connect: Callable[[str], C]) -> C:
    """Make a connection to the first host of ``dsn`` that answers, with ``connect(dsn)``.

    ``connect`` makes one psycopg2 connection from a DSN (``psycopg2._connect`` with the user's
    ``connection_factory``). It is called once per attempt with a single-address DSN, under a
    deadline of ``connect_timeout`` (and of any :func:`psycogreen.core.timeout`); a DSN that
    must go to libpq whole is handed to it whole, under the deadline.

    .. versionadded:: 1.0
    """
    ext = check_psycopg()
    if ext.get_wait_callback() is None:
        # Blocking libpq enforces connect_timeout per host itself, and there is no scheduler
        # for DNS to block.
        return connect(dsn)
    total = limit(_NO_CONNECTION)  # a timeout() block bounds the whole connect
    deadline = None if total is None else time.monotonic() + total
    lib = _libpq.load()
    defaults = lib.conndefaults() if lib is not None else {}
    plan = plan_connect(dsn, defaults) if lib is not None else None
    if plan is None:
        return _attempt_whole(connect, dsn, defaults, deadline)
    return _run(plan, dsn, connect, deadline)


# --- planning (no I/O) ---------------------------------------------------------------------------


def plan_connect(dsn: str, defaults: Mapping[str, str]) -> ConnectPlan | None:
    """Work out the host slots of ``dsn`` as libpq's ``connectOptions2()`` does.

    ``defaults`` are libpq's (:meth:`psycogreen.core._libpq.LibPQ.conndefaults`): an option
    libpq does not know has none, and an unknown option in ``dsn`` fails its parsing.

    :return: the plan, or ``None`` when libpq should have the DSN whole: it cannot be parsed
        or its host, hostaddr and port lists do not match (libpq reports either), or it names
        a ``service`` (whose file libpq reads).
    :raises psycopg2.OperationalError: ``connect_timeout`` is not an integer.
    """
    try:
        params: dict[str, str] = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return None
    if "service" in params:
        return None
    # libpq: explicit settings first, then its defaults (conninfo_add_defaults()).
    where = {key: defaults[key] for key in _WHERE if key in defaults}
    where.update((key, params[key]) for key in _WHERE if key in params)
    slots = _expand(where)
    if slots is None:
        return None
    return ConnectPlan(
        params=params,
        slots=slots,
        connect_timeout=_checked_timeout(where.get("connect_timeout")),
        prefer_standby=where.get("target_session_attrs") == "prefer-standby",
        load_balance=params.get("load_balance_hosts", defaults.get("load_balance_hosts"))
        == "random",
    )


def _expand(where: Mapping[str, str]) -> list[Attempt] | None:
    """Return the host slots; ``None`` when the lists do not match (libpq reports that)."""
    hosts = _split(where.get("host", ""))
    addrs = _split(where.get("hostaddr", ""))
    ports = _split(where.get("port", ""))
    count = len(addrs) if addrs else len(hosts) if hosts else 1
    if hosts and len(hosts) != count:
        return None  # "could not match %d host names to %d hostaddr values"
    if len(ports) == 1:
        ports *= count  # a single port applies to every host
    elif ports and len(ports) != count:
        return None  # "could not match %d port numbers to %d hosts"
    return [
        Attempt(hosts[i] if hosts else "", addrs[i] if addrs else "", ports[i] if ports else "")
        for i in range(count)
    ]


def _split(value: str) -> list[str]:
    # libpq's parse_comma_separated_list(): plain commas, no quoting, empty items kept; an
    # empty option means "not given".
    return value.split(",") if value else []


def _timeout_of(value: str | None) -> float | None:
    """``connect_timeout`` in seconds, ``None`` for no limit.

    :raises ValueError: not an integer.
    """
    if value is None:
        return None
    seconds = int(value)
    if seconds <= 0:
        return None  # zero or negative: wait indefinitely
    # libpq rounds a timeout of 1 up to 2 s (it counts whole seconds of time_t).
    return float(max(seconds, 2))


def _checked_timeout(value: str | None) -> float | None:
    try:
        return _timeout_of(value)
    except ValueError:
        # libpq checks the value only in its blocking connect; green, it would ignore it.
        _raise(f'connect_timeout must be a whole number of seconds, not "{value}"\n')


# --- connecting ----------------------------------------------------------------------------------


@dataclass
class _Failures:
    """The errors of every attempt, reported together as libpq does.

    Only the first exception is kept, without its traceback: a failed attempt's traceback
    holds the wait callback's frame and so the half-made connection; dropping it at once lets
    psycopg2 close that socket now, not when the final error is garbage-collected.
    """

    lines: list[str] = field(default_factory=list)
    first: BaseException | None = None

    def add(self, exc: BaseException, line: str) -> None:
        if not self.lines:
            self.first = exc.with_traceback(None)
        self.lines.append(line.rstrip("\n"))

    def raise_(self) -> NoReturn:
        first, self.first = self.first, None
        try:
            if first is not None and not _renamed(first) and len(set(self.lines)) == 1:
                # libpq's own message, the same from every attempt (an option it refuses
                # before connecting anywhere): its error as it is, once.
                raise first
        finally:
            del first  # no cycle through this frame
        _raise("\n".join(self.lines) + "\n")


def _renamed(exc: BaseException) -> bool:
    """Whether the failure's line is psycogreen's, not the error's own message."""
    if isinstance(exc, _Timeout) or was_polled(exc):
        return True
    return not isinstance(exc, psycopg2.OperationalError)


class _Timeout(Exception):  # noqa: N818 (private marker, never raised to users)
    pass


# What _try returns for a failed attempt: a connection_factory may return None, which
# psycopg2.connect() returns as it is.
_FAILED: Any = object()


def _run(plan: ConnectPlan, dsn: str, connect: Callable[[str], C], deadline: float | None) -> C:
    failures = _Failures()
    if plan.single is not None:
        # One host that needs no resolving: the user's DSN, untouched, under the deadline.
        seconds = _limit(plan.connect_timeout, deadline)
        conn = _try(connect, dsn, plan.single, seconds, failures)
        return conn if conn is not _FAILED else failures.raise_()
    slots = list(plan.slots)
    if plan.load_balance:
        plan.shuffle(slots)  # libpq >= 16 shuffles the hosts, then each host's addresses
    # libpq looks for a standby on every host first, then takes any server (PASS2); any other
    # target_session_attrs is the DSN's (or libpq's default), passed on as it is.
    passes: list[str | None] = ["standby", "any"] if plan.prefer_standby else [None]
    for tsa in passes:
        for slot in slots:
            for attempt in _addresses(slot, plan, failures):
                target = _attempt_dsn(plan.params, attempt, tsa)
                seconds = _limit(plan.connect_timeout, deadline)
                conn = _try(connect, target, attempt, seconds, failures)
                if conn is not _FAILED:
                    return conn
    return failures.raise_()


@reports_attempt(_Timeout, _FAILED)
def _try(
    connect: Callable[[str], C],
    dsn: str,
    attempt: Attempt,
    seconds: float | None,
    failures: _Failures,
) -> C:
    """Make one attempt: the connection, or ``_FAILED`` with the failure recorded."""
    if seconds is not None and seconds <= 0:  # psycogreen's deadline is over: stop here
        failures.add(_Timeout(), f"{attempt.describe()} failed: timeout expired")
        failures.raise_()
    try:
        return _attempt(connect, dsn, seconds)
    except _Timeout as exc:
        failures.add(exc, f"{attempt.describe()} failed: timeout expired")
    except attempt_error(timed_out=False):
        raise  # the user stopped the connect (Ctrl-C under the blocking callback): no next host
    except psycopg2.OperationalError as exc:
        # Polled, libpq's message lost its server; before any poll, it is libpq's whole one.
        message = f"{attempt.describe()} failed: {exc}" if was_polled(exc) else str(exc)
        failures.add(exc, message)
    return _FAILED  # type: ignore[no-any-return]


def _addresses(slot: Attempt, plan: ConnectPlan, failures: _Failures) -> Iterator[Attempt]:
    """Yield the attempts for one host slot: its addresses, resolved as libpq would."""
    if slot.hostaddr or not _needs_resolving(slot.host):
        yield slot
        return
    # socket.getaddrinfo is looked up now: gevent and eventlet replace it with their resolver
    # when they monkey-patch, so other greenlets run while DNS answers. A name the C library
    # answers from the hosts file never waits on a server: the C library's own (_socket's,
    # which monkey-patching leaves alone) resolves it without a trip through another thread.
    lookup = _socket.getaddrinfo if answered_locally(slot.host) else socket.getaddrinfo
    try:
        # The port is left out: only the addresses are needed, and libpq checks the port.
        infos = lookup(slot.host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        message = f'could not translate host name "{slot.host}" to address: {reason}'
        failures.add(psycopg2.OperationalError(message), message)
        return
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if plan.load_balance:
        plan.shuffle(addresses)
    for address in addresses:
        yield replace(slot, hostaddr=address)


def _needs_resolving(host: str) -> bool:
    # A numeric address: libpq's getaddrinfo() does not block on it.
    return bool(host) and not _is_socket(host) and not is_address(host)


def _is_socket(host: str) -> bool:
    # libpq's is_unixsock_path(): an absolute path, or "@" for Linux's abstract namespace.
    return host.startswith(("/", "@"))


def _attempt_dsn(params: Mapping[str, str], attempt: Attempt, tsa: str | None) -> str:
    # Every host option is given explicitly, empty when unset, so that libpq takes none of
    # them from the environment or a service (an empty host is the default socket directory,
    # an empty port the default port, an empty hostaddr none).
    single = {**params, "host": attempt.host, "hostaddr": attempt.hostaddr, "port": attempt.port}
    if tsa is not None:
        single["target_session_attrs"] = tsa
    return str(psycopg2.extensions.make_dsn(**single))


def _limit(connect_timeout: float | None, deadline: float | None) -> float | None:
    """The limit of the attempt starting now, by core's precedence (:func:`limit`)."""
    remaining = None if deadline is None else deadline - time.monotonic()
    return limit(_NO_CONNECTION, remaining, connect_timeout)


def _attempt(connect: Callable[[str], C], dsn: str, seconds: float | None) -> C:
    if seconds is None:  # neither connect_timeout nor a psycogreen deadline
        return connect(dsn)
    try:
        with timeout(seconds):
            return connect(dsn)
    except attempt_error(timed_out=True) as exc:
        raise _Timeout from exc


def _attempt_whole(
    connect: Callable[[str], C], dsn: str, defaults: Mapping[str, str], deadline: float | None
) -> C:
    """Hand ``dsn`` to libpq in one attempt, bounded by what is known of its limits."""
    try:
        value = psycopg2.extensions.parse_dsn(dsn).get("connect_timeout")
        seconds = _timeout_of(value if value is not None else defaults.get("connect_timeout"))
    except (psycopg2.Error, ValueError):
        seconds = None  # libpq reports the DSN's error, or ignores the value
    limit_ = _limit(seconds, deadline)
    if limit_ is not None and limit_ <= 0:
        _raise("timeout expired")
    try:
        return _attempt(connect, dsn, limit_)
    except _Timeout as exc:
        _raise("timeout expired", exc.__cause__)


def _raise(message: str, cause: BaseException | None = None) -> NoReturn:
    raise psycopg2.OperationalError(message) from cause
