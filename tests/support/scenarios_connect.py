# SPDX-License-Identifier: BSD-3-Clause
"""Connect scenarios: dead hosts, slow resolvers, leaks (``python -m tests.support.green``).

Every scenario connects the ordinary way, ``psycopg2.connect(...)`` after patching, through
the backend under test (``none``: core's scheduler-free callback). Dead hosts are sockets made
here on 127.0.0.1: one that listens and never accepts (the kernel completes the handshake, the
startup packet is never read), one that accepts and never answers, and a closed port.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from psycogreen import core
from tests.support.green import Scheduler

TIMEOUT = 2  # libpq's smallest connect_timeout (1 is rounded up to 2)
SLACK = 0.5  # what a connect may take beyond connect_timeout

#: A name only the fake resolvers of these scenarios know.
FAKE_NAME = "db.psycogreen.test"


def _patch(sched: Scheduler) -> None:
    if sched.name == "none":
        core.patch_psycopg("blocking")
    else:
        importlib.import_module(f"psycogreen.{sched.name}").patch_psycopg()


def _server(dsn: str) -> tuple[str, str, dict[str, str]]:
    """The real server's host and port, and the other parameters of ``dsn``."""
    params = psycopg2.extensions.parse_dsn(dsn)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    params.pop("hostaddr", None)
    return host, port, params


def _dsn(params: dict[str, str], **more: Any) -> str:
    return str(psycopg2.extensions.make_dsn(**{**params, **more}))


class DeadHosts:
    """Sockets on 127.0.0.1 that never answer a startup packet, and a closed port."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self._socks: list[socket.socket] = []
        self.accepted: list[socket.socket] = []
        self.never_accepts = self._listen(backlog=1)
        self.silent = self._listen(backlog=16)
        accepting = self._socks[-1]
        if sched.name == "none":
            threading.Thread(target=self._accept, args=(accepting,), daemon=True).start()
        else:
            self._acceptor = sched.spawn(self._accept, accepting)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            self.closed = closed.getsockname()[1]

    def _listen(self, backlog: int) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        self._socks.append(sock)
        return int(sock.getsockname()[1])

    def _accept(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = sock.accept()
                self.accepted.append(conn)  # held open, never answered

    def port(self, kind: str) -> int:
        return int(getattr(self, kind))

    def close(self) -> None:
        if self.sched.name != "none":
            self.sched.kill(self._acceptor)
        for sock in self._socks + self.accepted:
            sock.close()


@contextlib.contextmanager
def dead_hosts(sched: Scheduler) -> Iterator[DeadHosts]:
    hosts = DeadHosts(sched)
    try:
        yield hosts
    finally:
        hosts.close()


_SCHEDSTAT = Path("/proc/self/schedstat")


def _run_delay() -> float:
    """Seconds this process's main thread has spent runnable but waiting for a CPU (Linux)."""
    try:
        return int(_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class StallMeter:
    """A heartbeat task that tells the hub's stalls from the machine's.

    It ticks every ``interval`` s and records, per tick, how late it woke up. On a loaded
    machine part of that is the kernel running other processes: Linux accounts that time as
    the thread's run delay (``/proc/self/schedstat``), and the meter subtracts it. What is left
    is the time the hub itself did not run the task: a blocking resolver or connect shows
    there in full (the thread sleeps in a system call, which is not run delay).
    """

    def __init__(self, sched: Scheduler, interval: float = 0.01) -> None:
        self.sched = sched
        self.interval = interval
        self.gaps: list[float] = []
        self.stalls: list[float] = []
        self.running = True
        self.task = sched.spawn(self._run)

    def _run(self) -> None:
        last, delay = time.perf_counter(), _run_delay()
        while self.running:
            self.sched.sleep(self.interval)
            now, now_delay = time.perf_counter(), _run_delay()
            gap = now - last - self.interval
            self.gaps.append(gap)
            self.stalls.append(gap - (now_delay - delay))
            last, delay = now, now_delay

    def stop(self) -> None:
        self.running = False
        self.sched.join([self.task])

    def report(self) -> dict[str, Any]:
        return {
            "ticks": len(self.gaps),
            "max_gap": max(self.gaps, default=0.0),
            "max_stall": max(self.stalls, default=0.0),
        }


@contextlib.contextmanager
def stall_meter(sched: Scheduler) -> Iterator[StallMeter]:
    meter = StallMeter(sched)
    sched.sleep(0.05)  # the meter is ticking before the measured code runs
    try:
        yield meter
    finally:
        meter.stop()


def _backend_port(conn: Any) -> int:
    cur = conn.cursor()
    cur.execute("SELECT inet_server_port()")
    return int(cur.fetchone()[0])


def dead_first(
    sched: Scheduler, dsn: str, kind: str, connect_timeout: int = 2, how: str = "dsn"
) -> dict[str, Any]:
    """A dead host first in the list, then the real server: connected after one timeout."""
    _patch(sched)
    host, port, params = _server(dsn)
    out: dict[str, Any] = {}
    with dead_hosts(sched) as dead:
        hosts = f"127.0.0.1,{host}"
        ports = f"{dead.port(kind)},{port}"
        kwargs: dict[str, Any] = {}
        if how == "dsn":
            target = _dsn(params, host=hosts, port=ports, connect_timeout=connect_timeout)
        elif how == "kwargs":
            target = _dsn(params)
            kwargs = {"host": hosts, "port": ports, "connect_timeout": connect_timeout}
        else:  # the environment, as libpq reads it
            target = _dsn(params)
            os.environ.update(PGHOST=hosts, PGPORT=ports, PGCONNECT_TIMEOUT=str(connect_timeout))
        measure = stall_meter(sched) if sched.name != "none" else contextlib.nullcontext()
        with measure as meter:
            start = time.perf_counter()
            conn = psycopg2.connect(target, **kwargs)
            out["elapsed"] = time.perf_counter() - start
        if meter is not None:
            out.update(meter.report())
        out["port"] = _backend_port(conn)
        out["server_port"] = int(port)
        conn.close()
    return out


def all_dead(sched: Scheduler, dsn: str, connect_timeout: int = 2) -> dict[str, Any]:
    """Every host dead: one error, within N x connect_timeout, naming every host."""
    _patch(sched)
    _, _, params = _server(dsn)
    with dead_hosts(sched) as dead:
        ports = [dead.never_accepts, dead.silent, dead.closed]
        target = _dsn(
            params,
            host="127.0.0.1,127.0.0.1,127.0.0.1",
            port=",".join(map(str, ports)),
            connect_timeout=connect_timeout,
        )
        start = time.perf_counter()
        try:
            psycopg2.connect(target)
        except psycopg2.OperationalError as exc:
            error = [type(exc).__name__, str(exc)]
        else:
            error = None
        elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "error": error, "ports": ports}


def deadline(
    sched: Scheduler, dsn: str, seconds: float = 1.0, how: str = "block"
) -> dict[str, Any]:
    """psycogreen's own deadline bounds a connect that has no connect_timeout."""
    _patch(sched)
    _, _, params = _server(dsn)
    with dead_hosts(sched) as dead:
        target = _dsn(params, host="127.0.0.1,127.0.0.1", port=f"{dead.silent},{dead.silent}")
        start = time.perf_counter()
        try:
            if how == "block":
                with core.timeout(seconds):
                    psycopg2.connect(target)
            else:  # the connection's own deadline, which covers its connect
                psycopg2.connect(target, psycogreen_timeout=seconds)
        except psycopg2.OperationalError as exc:
            error: list[str] | None = [type(exc).__name__, str(exc)]
        else:
            error = None
    return {"elapsed": time.perf_counter() - start, "error": error, "port": dead.silent}


# --- resolvers made slow by the test -------------------------------------------------------------


def _slow_resolver(
    sched: Scheduler, delay: float, names: dict[str, str], *, blocking: bool = False
) -> None:
    """Make the scheduler's resolver take ``delay`` s (sleeping green) and know ``names``.

    ``blocking``: sleep the whole process instead, as a resolver that blocks would (the
    measurement's negative control).
    """
    if sched.name == "gevent":
        import gevent
        from gevent.monkey import get_original

        hub = gevent.get_hub()
        real = hub.resolver
        sleep = get_original("time", "sleep") if blocking else gevent.sleep

        class SlowResolver:
            def getaddrinfo(self, host: Any, port: Any, family: int = 0, *args: Any) -> Any:
                sleep(delay)
                if host in names:
                    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port or 0))]
                if host == "localhost":
                    return real.getaddrinfo(host, port, family, *args)
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        hub.resolver = SlowResolver()
    elif sched.name == "eventlet":
        import eventlet
        from eventlet.patcher import original
        from eventlet.support import greendns

        sleep = original("time").sleep if blocking else eventlet.sleep

        class Answer:
            def __init__(self, qname: str, addresses: list[str]) -> None:
                self.qname = qname
                self.rrset = [type("RR", (), {"address": a})() for a in addresses]

        def resolve(name: str, family: int = socket.AF_INET, *args: Any, **kwargs: Any) -> Any:
            sleep(delay / 2)  # eventlet asks for AAAA, then A
            if name in names:
                return Answer(name, [names[name]] if family == socket.AF_INET else [])
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        greendns.resolve = resolve
    else:
        message = f"no green resolver under {sched.name}"
        raise RuntimeError(message)


def slow_dns(
    sched: Scheduler, dsn: str, delay: float = 0.5, blocking: bool = False
) -> dict[str, Any]:
    """Names resolved by a slow green resolver: the hub keeps ticking; libpq gets the name."""
    _patch(sched)
    host, port, params = _server(dsn)
    _slow_resolver(sched, delay, {FAKE_NAME: host}, blocking=blocking)
    out: dict[str, Any] = {}
    with stall_meter(sched) as meter:
        start = time.perf_counter()
        conn = psycopg2.connect(_dsn(params, host=FAKE_NAME, port=port))
        out["elapsed"] = time.perf_counter() - start
    out.update(meter.report())
    out["host"] = conn.info.host
    out["dsn_host"] = conn.get_dsn_parameters().get("host")
    out["hostaddr"] = conn.get_dsn_parameters().get("hostaddr")
    out["port"] = _backend_port(conn)
    conn.close()

    # an unknown name first in the list: reported, and the next host is tried
    conn = psycopg2.connect(_dsn(params, host=f"nosuch.psycogreen.test,{FAKE_NAME}", port=port))
    out["after_unknown"] = conn.info.host
    conn.close()

    # only an unknown name: a prompt OperationalError naming it
    start = time.perf_counter()
    try:
        psycopg2.connect(_dsn(params, host="nosuch.psycogreen.test", port=port))
    except psycopg2.OperationalError as exc:
        out["unknown"] = [type(exc).__name__, str(exc), time.perf_counter() - start]
    return out


def hosts_file_name(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A name from the hosts file is resolved by the C library; any other by the scheduler's."""
    from psycogreen.core import _hostsfile

    _patch(sched)
    host, port, params = _server(dsn)
    out: dict[str, Any] = {"local": _hostsfile.answered_locally("localhost")}
    _slow_resolver(sched, 0.0, {FAKE_NAME: host})
    asked: list[str] = []
    green = socket.getaddrinfo  # the scheduler's, after monkey-patching

    def recording(name: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        return green(name, *args, **kwargs)

    socket.getaddrinfo = recording
    try:
        for name in ("localhost", "LocalHost", FAKE_NAME):
            conn = psycopg2.connect(_dsn(params, host=name, port=port))
            out[name] = [conn.info.host, conn.get_dsn_parameters().get("hostaddr")]
            conn.close()
    finally:
        socket.getaddrinfo = green
    out["asked"] = asked
    return out


# --- ordinary ways of connecting ---------------------------------------------------------------


class Connection(psycopg2.extensions.connection):
    """A user's connection_factory."""


def factory_and_sockets(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """connection_factory is respected; unix-socket hosts are not resolved and still work."""
    _patch(sched)
    host, port, params = _server(dsn)
    out: dict[str, Any] = {}
    with dead_hosts(sched) as dead:
        conn = psycopg2.connect(
            _dsn(params, host=f"127.0.0.1,{host}", port=f"{dead.closed},{port}"),
            connection_factory=Connection,
        )
        out["factory"] = isinstance(conn, Connection)
        cur = conn.cursor()
        cur.execute("SHOW unix_socket_directories")
        dirs = [d.strip() for d in cur.fetchone()[0].split(",") if d.strip().startswith("/")]
        conn.close()
    out["socket_dir"] = bool(dirs)
    if dirs:
        missing = "/nonexistent-psycogreen-dir"
        conn = psycopg2.connect(_dsn(params, host=f"{missing},{dirs[0]}", port=port))
        out["socket_host"] = conn.info.host == dirs[0]
        conn.close()
        try:
            psycopg2.connect(_dsn(params, host=missing, port=port))
        except psycopg2.OperationalError as exc:
            out["socket_error"] = str(exc)
    return out


def service_file(sched: Scheduler, dsn: str, path: str, connect_timeout: int = 2) -> dict[str, Any]:
    """A service with a dead host first: through ``PGSERVICE``, then as ``service=``."""
    _patch(sched)
    host, port, params = _server(dsn)
    with dead_hosts(sched) as dead:
        with Path(path).open("w", encoding="utf-8") as f:
            f.write("# written by the test\n[psycogreen_test]\n")
            f.write(f"host=127.0.0.1,{host}\nport={dead.silent},{port}\n")
            f.write(f"connect_timeout={connect_timeout}\n")
            for key in ("user", "dbname"):
                if key in params:
                    f.write(f"{key}={params[key]}\n")
        os.environ["PGSERVICEFILE"] = path
        # PGSERVICE: libpq's defaults carry the service's hosts, tried one by one.
        os.environ["PGSERVICE"] = "psycogreen_test"
        start = time.perf_counter()
        conn = psycopg2.connect("")
        elapsed = time.perf_counter() - start
        out = {"elapsed": elapsed, "port": _backend_port(conn), "server_port": int(port)}
        conn.close()
        del os.environ["PGSERVICE"]
        # service= in the DSN goes to libpq whole: the connect_timeout beside it bounds it all.
        start = time.perf_counter()
        try:
            psycopg2.connect(f"service=psycogreen_test connect_timeout={connect_timeout}")
        except psycopg2.OperationalError as exc:
            out["whole"] = type(exc).__name__
        out["whole_elapsed"] = time.perf_counter() - start
    return out


def bad_input(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A malformed DSN and a bad option give psycopg2's and libpq's own errors."""
    _patch(sched)
    out: dict[str, Any] = {}
    for name, target in {
        "malformed": "host=127.0.0.1 = port",
        "bad_option": dsn + " sslmode=bogus",
        "bad_timeout": dsn + " connect_timeout=soon",
        "mismatch": "host=127.0.0.1,127.0.0.1 port=1,2,3",
    }.items():
        try:
            psycopg2.connect(target)
        except psycopg2.Error as exc:
            out[name] = [type(exc).__name__, str(exc)]
    return out


def _fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def fd_leak(sched: Scheduler, dsn: str, n: int = 1000, timeouts: int = 3) -> dict[str, Any]:
    """``n`` failed connects (refused, unknown name, bad database) and a few timeouts."""
    _patch(sched)
    host, port, params = _server(dsn)
    if sched.name != "none":
        _slow_resolver(sched, 0.0, {FAKE_NAME: host})
    failures = {"ok": 0, "failed": 0}
    with dead_hosts(sched) as dead:
        # warm up: first connects load libraries and open files kept for the process
        for target in (
            _dsn(params, host=host, port=port),
            _dsn(params, host="127.0.0.1", port=dead.closed),
        ):
            with contextlib.suppress(psycopg2.OperationalError):
                psycopg2.connect(target).close()
        before = _fds()
        targets = [
            _dsn(params, host="127.0.0.1", port=dead.closed),
            _dsn(
                params, host=f"127.0.0.1,{host}", port=f"{dead.closed},{port}", dbname="no_such_db"
            ),
        ]
        if sched.name != "none":
            targets.append(
                _dsn(params, host=f"nosuch.psycogreen.test,{FAKE_NAME}", port=dead.closed)
            )
        for i in range(n):
            try:
                psycopg2.connect(targets[i % len(targets)])
            except psycopg2.OperationalError:
                failures["failed"] += 1
            else:
                failures["ok"] += 1

        def time_out() -> str:
            try:
                psycopg2.connect(
                    _dsn(
                        params,
                        host="127.0.0.1,127.0.0.1",
                        port=f"{dead.never_accepts},{dead.silent}",
                        connect_timeout=2,
                    )
                )
            except psycopg2.OperationalError as exc:
                return str(exc)
            return "connected"

        if sched.name == "none":
            timed = [time_out() for _ in range(timeouts)]
        else:
            timed = sched.join([sched.spawn(time_out) for _ in range(timeouts)])
        # the dead server's own side of each accepted connection is not the client's leak
        after = _fds() - len(dead.accepted)
    return {"before": before, "after": after, **failures, "timeouts": [str(t) for t in timed]}


def _connect_hosts(dsn: str) -> Any:
    """Core's host-by-host connect, as ``psycopg2.connect`` uses it once patched."""
    import psycopg2._psycopg

    from psycogreen.core._connect_hosts import connect_with

    return connect_with(psycopg2._psycopg._connect, dsn)


def unpatched(sched: Scheduler, dsn: str, connect_timeout: int = 2) -> dict[str, Any]:
    """psycogreen's connect with no wait callback installed: libpq's blocking connect."""
    assert psycopg2.extensions.get_wait_callback() is None
    _, _, params = _server(dsn)
    with dead_hosts(sched) as dead:
        target = _dsn(
            params,
            host="127.0.0.1,127.0.0.1",
            port=f"{dead.never_accepts},{dead.silent}",
            connect_timeout=connect_timeout,
        )
        start = time.perf_counter()
        try:
            _connect_hosts(target)
        except psycopg2.OperationalError as exc:
            error: list[str] | None = [type(exc).__name__, str(exc)]
        else:
            error = None
    return {"elapsed": time.perf_counter() - start, "error": error}


def pgpass(sched: Scheduler, dsn: str, server: str, path: str) -> dict[str, Any]:
    """Log in with a password from a password file, the host given by a name."""
    _patch(sched)
    host, port, _ = _server(server)
    _slow_resolver(sched, 0.0, {FAKE_NAME: host})
    target = _dsn({}, host=FAKE_NAME, port=port, user="pgpass_user", dbname="postgres")
    password_file = Path(path)
    os.environ["PGPASSFILE"] = path
    out: dict[str, Any] = {}
    password_file.write_text(f"{FAKE_NAME}:{port}:*:pgpass_user:pgpass-secret\n", encoding="utf-8")
    password_file.chmod(0o600)
    conn = psycopg2.connect(target)
    cur = conn.cursor()
    cur.execute("SELECT current_user")
    out["by_name"] = cur.fetchone()[0]
    conn.close()
    password_file.write_text(f"{host}:{port}:*:pgpass_user:pgpass-secret\n", encoding="utf-8")
    try:
        psycopg2.connect(target).close()
    except psycopg2.OperationalError as exc:
        out["by_address_entry"] = str(exc)
    return out


def verify_full(sched: Scheduler, dsn: str, server: str, ca: str) -> dict[str, Any]:
    """sslmode=verify-full after green resolution: the certificate is checked against the name."""
    _patch(sched)
    host, port, params = _server(server)
    _slow_resolver(sched, 0.0, {FAKE_NAME: host, "other.psycogreen.test": host})
    tls = {"sslmode": "verify-full", "sslrootcert": ca, "port": port}
    out: dict[str, Any] = {}
    conn = psycopg2.connect(_dsn(params, host=FAKE_NAME, **tls))
    out["ssl_in_use"] = conn.info.ssl_in_use
    out["host"] = conn.info.host
    conn.close()
    try:
        psycopg2.connect(_dsn(params, host="other.psycogreen.test", **tls)).close()
    except psycopg2.OperationalError as exc:
        out["other_name"] = str(exc)
    return out


def session_attrs(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """target_session_attrs against a primary, behind a dead host."""
    _patch(sched)
    host, port, params = _server(dsn)
    out: dict[str, Any] = {}
    with dead_hosts(sched) as dead:
        hosts = {"host": f"127.0.0.1,{host}", "port": f"{dead.closed},{port}"}
        for attrs in ("read-write", "primary", "prefer-standby", "any"):
            conn = psycopg2.connect(_dsn(params, target_session_attrs=attrs, **hosts))
            out[attrs] = _backend_port(conn) == int(port)
            conn.close()
        for attrs in ("standby", "read-only"):
            try:
                psycopg2.connect(_dsn(params, target_session_attrs=attrs, **hosts))
            except psycopg2.OperationalError as exc:
                out[attrs] = str(exc)
    out["ports"] = [dead.closed, int(port)]
    return out
