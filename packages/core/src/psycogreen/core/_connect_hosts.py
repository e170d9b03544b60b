# SPDX-License-Identifier: BSD-3-Clause
"""Connect host by host, with libpq's ``connect_timeout``, resolving names without blocking.

In green mode psycopg2 connects with ``PQconnectStart``/``PQconnectPoll``. That path ignores
``connect_timeout`` (libpq enforces it only in its blocking ``connectDBComplete``; psycopg2#944),
so a black-holed host waits for the kernel's TCP timeout, once per host of a multi-host DSN
(psycopg2#1253); and libpq resolves host names with a blocking ``getaddrinfo`` inside the
connect call, stopping every greenlet while DNS answers.

So, like psycopg 3, psycogreen connects host by host itself: it works out the host list as libpq
would (DSN, keyword arguments, service file, ``PG*`` environment variables), resolves each name
with ``socket.getaddrinfo`` (the scheduler's resolver once the program is monkey-patched: core
imports no scheduler), and makes one single-address libpq connection per attempt,
``host=<name> hostaddr=<address> port=<port>``, so that libpq still checks TLS certificates and
``.pgpass`` against the name. Each attempt runs under core's deadline
(:func:`psycogreen.core.timeout`), which the wait callback enforces.
"""

from __future__ import annotations

import _socket
import os
import random
import re
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from psycogreen.core import _dsn
from psycogreen.core._compat import attempt_error, check_psycopg
from psycogreen.core._hostsfile import answered_locally, is_address
from psycogreen.core._observe import reports_attempt
from psycogreen.core._timeout import current_timeout, timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "Attempt",
    "ConnectPlan",
    "connect_hosts",
    "connect_with",
    "plan_connect",
]

C = TypeVar("C")

# libpq's compiled-in default port (DEF_PGPORT_STR), only used to name a host in messages: an
# empty port is passed on empty, and libpq substitutes its own default.
_DEFAULT_PORT = "5432"

# Environment variables libpq reads for the options that decide where to connect
# (fe-connect.c: PQconninfoOptions), with the first libpq version that knows each option.
_ENV = {
    "host": ("PGHOST", 0),
    "hostaddr": ("PGHOSTADDR", 0),
    "port": ("PGPORT", 0),
    "connect_timeout": ("PGCONNECT_TIMEOUT", 0),
    "target_session_attrs": ("PGTARGETSESSIONATTRS", 100000),
    "load_balance_hosts": ("PGLOADBALANCEHOSTS", 160000),
}
# libpq's parse_int_param(): strtol() in base 10, with surrounding whitespace.
_INT = re.compile(r"\s*([+-]?[0-9]+)\s*\Z")
# libpq's messages about the options themselves, raised before any host is tried, or naming
# the host already. Other failures of a green connect to a TCP address lack the host: libpq
# 17 drops the "connection to server at ..." of the first address of an asynchronous connect
# (measured; unix sockets keep theirs), and each attempt here is a first address.
_PER_HOST = ("connection to server", "could not translate host name")
_UNPREFIXED = (
    "connection to server",
    "could not translate host name",
    "could not parse network address",
    "could not match ",
    "invalid ",
    'missing "="',
    "unterminated quoted string",
    "definition of service",
    "syntax error in service file",
    "nested service specifications",
    "service file",
    "out of memory",
)


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
    target_session_attrs: str | None = None
    load_balance: bool = False
    shuffle: Callable[[list[Any]], None] = field(default=random.shuffle, repr=False)
    single: Attempt | None = field(init=False, default=None)
    """The only attempt, when the DSN can go to libpq as it is (one host, nothing to resolve)."""

    def __post_init__(self) -> None:
        """Find out whether the DSN needs splitting at all."""
        if len(self.slots) == 1 and self.target_session_attrs != "prefer-standby":
            slot = self.slots[0]
            if slot.hostaddr or not _needs_resolving(slot.host):
                self.single = slot


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
    import psycopg2.extensions  # noqa: PLC0415 (psycopg2 is optional)

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
    deadline of ``connect_timeout`` (and of any :func:`psycogreen.core.timeout`); a DSN whose
    parameters psycogreen cannot reproduce exactly is handed to it whole, under the deadline.

    .. versionadded:: 1.0
    """
    ext = check_psycopg()
    if ext.get_wait_callback() is None:
        # Blocking libpq enforces connect_timeout per host itself, and there is no scheduler
        # for DNS to block.
        return connect(dsn)
    limit = current_timeout()
    deadline = None if limit is None else time.monotonic() + limit
    plan = _cached_plan(dsn, ext.libpq_version())
    if plan is None:
        # Unparsable DSN (psycopg2 reports it), or a service file psycogreen cannot read:
        # one libpq call, bounded by what is known of the limits.
        seconds = _connect_timeout(dsn)
        return _attempt_whole(connect, dsn, seconds, deadline)
    return _run(plan, dsn, connect, deadline)


# --- planning (no I/O but the service file) ------------------------------------------------------

# Every environment variable a plan depends on: a plan is reused only for the same DSN and
# the same values of these (a program connects with a handful of DSNs, again and again).
_ENV_KEY = ("PGSERVICE", *(var for var, _ in _ENV.values()))
_plans: dict[tuple[str, tuple[str | None, ...]], ConnectPlan] = {}


def _cached_plan(dsn: str, libpq_version: int) -> ConnectPlan | None:
    environ = os.environ
    key = (dsn, tuple(map(environ.get, _ENV_KEY)))
    plan = _plans.get(key)
    if plan is None:
        plan = plan_connect(dsn, environ, libpq_version)
        # A service file may change between connects: a plan that read one is not kept.
        if plan is not None and key[1][0] is None and "service" not in plan.params:
            if len(_plans) >= 64:
                _plans.clear()
            _plans[key] = plan
    return plan


class _Opaque(Exception):  # noqa: N818 (private signal)
    """The DSN uses something psycogreen does not reproduce: let libpq handle it whole."""


def plan_connect(dsn: str, environ: Mapping[str, str], libpq_version: int) -> ConnectPlan | None:
    """Work out the host slots of ``dsn`` as libpq's ``connectOptions2()`` does.

    :return: the plan, or ``None`` when libpq should have the DSN whole: it cannot be parsed,
        its host, hostaddr and port lists do not match (libpq reports either), or it names a
        service psycogreen finds in no service file it knows.
    :raises psycopg2.OperationalError: ``connect_timeout`` is not an integer (libpq's message).
    """
    try:
        return _plan(dsn, environ, libpq_version)
    except _Opaque:
        return None


def _plan(dsn: str, environ: Mapping[str, str], libpq_version: int) -> ConnectPlan | None:
    import psycopg2  # noqa: PLC0415
    import psycopg2.extensions  # noqa: PLC0415

    try:
        params: dict[str, str] = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return None
    effective = dict(params)
    # libpq: explicit settings, then the service file for what is still unset, then the
    # environment, then compiled-in defaults (conninfo_add_defaults()).
    service = params.get("service", environ.get("PGSERVICE"))
    if service:
        for key, value in _service_params(service, params, environ).items():
            effective.setdefault(key, value)
    for key, (var, since) in _ENV.items():
        if key not in effective and libpq_version >= since:
            from_env = environ.get(var)
            if from_env is not None:
                effective[key] = from_env
    slots = _expand(effective)
    if slots is None:
        raise _Opaque
    try:
        seconds = _parse_timeout(effective.get("connect_timeout"))
    except psycopg2.OperationalError as exc:
        if libpq_version >= 170000:
            # libpq 17 reports it as the failure of the first host's attempt (measured).
            _raise(f"{slots[0].describe()} failed: {exc}")
        raise
    tsa = effective.get("target_session_attrs")
    lbh = effective.get("load_balance_hosts")
    return ConnectPlan(
        params=params,
        slots=slots,
        connect_timeout=seconds,
        target_session_attrs=tsa,
        load_balance=lbh == "random" and libpq_version >= 160000,
    )


def _expand(effective: Mapping[str, str]) -> list[Attempt] | None:
    """Return the host slots; ``None`` when the lists do not match (libpq reports that)."""
    hosts = _split(effective.get("host", ""))
    addrs = _split(effective.get("hostaddr", ""))
    ports = _split(effective.get("port", ""))
    count = len(addrs) if addrs else len(hosts) if hosts else 1
    if hosts and len(hosts) != count:
        return None  # "could not match %d host names to %d hostaddr values"
    if ports and len(ports) == 1:
        ports *= count  # a single port applies to every host
    elif ports and len(ports) != count:
        return None  # "could not match %d port numbers to %d hosts"
    return [
        Attempt(
            host=hosts[i] if hosts else "",
            hostaddr=addrs[i] if addrs else "",
            port=ports[i] if ports else "",
        )
        for i in range(count)
    ]


def _split(value: str) -> list[str]:
    # libpq's parse_comma_separated_list(): plain commas, no quoting, empty items kept; an
    # empty option means "not given".
    return value.split(",") if value else []


def _parse_timeout(value: str | None) -> float | None:
    """``connect_timeout`` as libpq's ``connectDBComplete()`` reads it."""
    if value is None:
        return None
    match = _INT.match(value)
    if match is None:
        _raise(
            f'invalid integer value "{value.lstrip()}" for connection option "connect_timeout"\n'
        )
    seconds = int(match.group(1))
    if seconds <= 0:
        return None  # zero or negative: wait indefinitely
    # libpq rounds a timeout of 1 up to 2 s (it counts whole seconds of time_t).
    return float(max(seconds, 2))


def _connect_timeout(dsn: str) -> float | None:
    """Return the best known ``connect_timeout`` of a DSN psycogreen does not plan."""
    import psycopg2  # noqa: PLC0415
    import psycopg2.extensions  # noqa: PLC0415

    try:
        value = psycopg2.extensions.parse_dsn(dsn).get("connect_timeout")
    except psycopg2.Error:
        return None
    value = value if value is not None else os.environ.get("PGCONNECT_TIMEOUT")
    try:
        return _parse_timeout(value)
    except psycopg2.OperationalError:
        return None


def _service_params(
    service: str, params: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """Return the parameters of ``service``, read as libpq's ``parseServiceInfo()`` does.

    :raises _Opaque: the service is not in a file psycogreen can find (libpq may know a
        compiled-in system directory), or the file is one libpq would reject.
    """
    user_file = params.get("servicefile") or environ.get("PGSERVICEFILE")
    candidates = [Path(user_file)] if user_file else [Path.home() / ".pg_service.conf"]
    if sysconf := environ.get("PGSYSCONFDIR"):
        candidates.append(Path(sysconf) / "pg_service.conf")
    else:
        candidates.append(Path())  # the compiled-in directory: unknown here
    for path in candidates:
        if path == Path():
            break
        found = _read_service(path, service)
        if found is not None:
            return found
    raise _Opaque


def _read_service(path: Path, service: str) -> dict[str, str] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        raise _Opaque from exc
    found: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if found is not None:
                break  # the section ended
            if line.endswith("]") and line[1:-1] == service:
                found = {}
            continue
        if found is None:
            continue
        key, sep, value = line.partition("=")
        if not sep or key == "service" or not key.isidentifier():
            raise _Opaque  # libpq reports a syntax error or a nested service
        found.setdefault(key, value)
    return found


# --- connecting ----------------------------------------------------------------------------------


@dataclass
class _Failures:
    """The errors of every attempt, reported together as libpq does.

    Only messages are kept. A failed attempt's exception holds, through its traceback, the
    wait callback's frame and so the half-made connection: dropping it at once lets
    psycopg2 close that socket now, not when the final error is garbage-collected.
    """

    lines: list[str] = field(default_factory=list)
    first: BaseException | None = None
    count: int = 0

    def add(self, exc: BaseException, line: str) -> None:
        self.count += 1
        if self.count == 1 and not isinstance(exc, _Timeout):
            self.first = exc.with_traceback(None)
        line = line.rstrip("\n")
        # An option error repeats for every host: say it once. A host listed twice is tried,
        # and reported, twice, as libpq does.
        if line.startswith(_PER_HOST) or line not in self.lines:
            self.lines.append(line)

    def raise_(self) -> NoReturn:
        message = "\n".join(self.lines) + "\n"
        first, self.first = self.first, None
        try:
            if first is not None and str(first) == message:
                raise first  # one cause for every attempt (a bad option): libpq's own error
        finally:
            del first  # no cycle through this frame
        import psycopg2  # noqa: PLC0415

        raise psycopg2.OperationalError(message) from None


class _Timeout(Exception):  # noqa: N818 (private marker, never raised to users)
    pass


# What _try returns for a failed attempt: a connection_factory may return None, which
# psycopg2.connect() returns as it is.
_FAILED: Any = object()


def _run(plan: ConnectPlan, dsn: str, connect: Callable[[str], C], deadline: float | None) -> C:
    failures = _Failures()
    if plan.single is not None:
        # One host that needs no resolving: the user's DSN, untouched, under the deadline.
        conn = _try(connect, dsn, plan.single, _limit(plan.connect_timeout, deadline), failures)
        return conn if conn is not _FAILED else failures.raise_()
    slots = list(plan.slots)
    if plan.load_balance:
        plan.shuffle(slots)  # libpq >= 16 shuffles the hosts, then each host's addresses
    passes = [plan.target_session_attrs]
    if plan.target_session_attrs == "prefer-standby":
        # libpq looks for a standby on every host first, then takes any server (PASS2).
        passes = ["standby", "any"]
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
    except _operational() as exc:
        message = str(exc)
        if not message.startswith(_UNPREFIXED):
            message = f"{attempt.describe()} failed: {message}"
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
        failures.add(_operational()(message), message)
        return
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if plan.load_balance:
        plan.shuffle(addresses)
    for address in addresses:
        yield replace(slot, hostaddr=address)


def _needs_resolving(host: str) -> bool:
    if not host or _is_socket(host):
        return False
    # A numeric address: libpq's getaddrinfo() does not block on it.
    return not is_address(host)


def _is_socket(host: str) -> bool:
    # libpq's is_unixsock_path(): an absolute path, or "@" for Linux's abstract namespace.
    return host.startswith(("/", "@"))


def _attempt_dsn(params: Mapping[str, str], attempt: Attempt, tsa: str | None) -> str:
    import psycopg2.extensions  # noqa: PLC0415

    single = dict(params)
    # Every host option is given explicitly, empty when unset, so that libpq takes none of
    # them from the environment or a service file (an empty host is the default socket
    # directory, an empty port the default port, an empty hostaddr none).
    single["host"] = attempt.host
    single["hostaddr"] = attempt.hostaddr
    single["port"] = attempt.port
    if tsa is not None:
        single["target_session_attrs"] = tsa
    return str(psycopg2.extensions.make_dsn(**single))


def _limit(connect_timeout: float | None, deadline: float | None) -> float | None:
    if deadline is None:
        return connect_timeout
    remaining = deadline - time.monotonic()
    return remaining if connect_timeout is None else min(connect_timeout, remaining)


def _attempt(connect: Callable[[str], C], dsn: str, seconds: float | None) -> C:
    if seconds is None:  # neither connect_timeout nor a psycogreen deadline
        return connect(dsn)
    try:
        with timeout(seconds):
            return connect(dsn)
    except attempt_error(timed_out=True) as exc:
        raise _Timeout from exc


def _attempt_whole(
    connect: Callable[[str], C], dsn: str, seconds: float | None, deadline: float | None
) -> C:
    limit = _limit(seconds, deadline)
    if limit is not None and limit <= 0:
        _raise("timeout expired")
    try:
        return _attempt(connect, dsn, limit)
    except _Timeout as exc:
        _raise("timeout expired", exc.__cause__)


def _operational() -> type[Exception]:
    import psycopg2  # noqa: PLC0415

    return psycopg2.OperationalError


def _raise(message: str, cause: BaseException | None = None) -> NoReturn:
    import psycopg2  # noqa: PLC0415

    raise psycopg2.OperationalError(message) from cause
