# SPDX-License-Identifier: BSD-3-Clause
"""The chaos soak: ``hatch run soak:run [--seconds S] [--clients N] [--scheduler gevent|eventlet|both] [--legacy]``.

Many greenlets, each on a connection of its own through a TCP proxy on 127.0.0.1, run
self-verifying statements and transactions while a chaos task injects, at random: scheduler
timeouts, kills of workers, psycogreen deadlines, two interrupts that expire together,
``pg_terminate_backend``, a frozen proxy (a black hole for a few seconds) and server restarts.
At the end every run is verified, and the counts that must be 0 decide the exit status.

This process owns the throwaway PostgreSQL (``bench/soak_server.py``) and the proxy
(``bench/soak_proxy.py``), and serves a control socket through which a run freezes the proxy
and restarts the server. Each run is a process of its own (``bench/soak_child.py``),
monkey-patched for its scheduler. ``--legacy`` adds psycopg2 under psycogreen 1.0.2's
callback (``bench/legacy.py``) as a baseline: its counts are reported beside, and do not
decide the exit status.

``--json PATH`` saves the raw results; ``--docs NAME`` writes the report into
``docs/soak.md``, between the ``<!-- soak:NAME:begin -->`` and ``<!-- soak:NAME:end -->``
marks.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.append(str(HERE))  # imported from the tests too: the sibling modules

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any  # noqa: E402

from soak_server import Server  # noqa: E402

DOCS = ROOT / "docs" / "soak.md"
IMPLS = {"current": "psycogreen", "legacy": "psycogreen 1.0.2"}
KINDS = ("timeout", "kill", "deadline", "double", "terminate", "freeze", "restart")


class ProxyProcess:
    """The freezable proxy, a process of its own, driven through its stdin."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "soak_proxy.py"), "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lock = threading.Lock()
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the proxy process ended")
        return answer.strip()

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Control:
    """A unix socket on which a run asks for a freeze, a thaw or a server restart."""

    def __init__(self, server: Server, proxy: ProxyProcess) -> None:
        self.server = server
        self.proxy = proxy
        self.dir = tempfile.mkdtemp(prefix="psycogreen-soak-")
        self.path = str(Path(self.dir) / "control")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.restart_lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            line = conn.makefile("r").readline()
            command, _, argument = line.strip().partition(" ")
            try:
                if command == "freeze":
                    self.proxy.command(f"freeze {float(argument)}")
                    answer = "ok"
                elif command == "thaw":
                    self.proxy.command("thaw")
                    answer = "ok"
                elif command == "restart" and argument in {"fast", "immediate"}:
                    with self.restart_lock:
                        answer = f"ok {self.server.restart(argument):.3f}"
                else:
                    answer = f"error: unknown command {line.strip()!r}"
            except Exception as exc:
                answer = f"error: {type(exc).__name__}: {exc}"
            with contextlib.suppress(OSError):
                conn.sendall(answer.encode() + b"\n")

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def prepare_schema(dsn: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(
        "CREATE TABLE IF NOT EXISTS soak_rows (token text NOT NULL, run text NOT NULL, "
        "n int NOT NULL)"
    )
    cur.execute("CREATE INDEX IF NOT EXISTS soak_rows_run ON soak_rows (run)")
    conn.close()


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    """One run, in a process of its own; its result, or what went wrong."""
    path = os.pathsep.join(
        filter(
            None,
            [
                *(str(ROOT / "packages" / p / "src") for p in ("core", "gevent", "eventlet")),
                os.environ.get("PYTHONPATH"),
            ],
        )
    )
    env = {**os.environ, "PYTHONPATH": path}
    if config["impl"] == "legacy":
        # the baseline is 1.0.2 alone: no automatic patching by this checkout's plugin
        env["PSYCOGREEN_GEVENT_AUTOPATCH"] = "0"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "soak_child.py"), json.dumps(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    limit = float(config["seconds"]) + 240
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return {**_identity(config), "error": f"the run did not finish within {limit:g} s"}
    lines = out.strip().splitlines()
    if proc.returncode or not lines:
        return {**_identity(config), "error": f"the run exited {proc.returncode}"}
    try:
        return dict(json.loads(lines[-1]))
    except ValueError:
        return {**_identity(config), "error": "the run printed no result"}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in ("scheduler", "impl", "clients", "seed")}


def machine(server: Server) -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["CPU"] = line.split(":", 1)[1].strip()
                break
    info["cores"] = str(os.cpu_count())
    with contextlib.suppress(OSError, IndexError, ValueError):
        info["memory"] = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.1f} GiB"
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Python"] = platform.python_version()
    info["PostgreSQL"] = server.version()
    for dist in ("psycopg2-binary", "psycopg2", "gevent", "eventlet", "greenlet"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist] = metadata.version(dist)
    with contextlib.suppress(ImportError):
        import psycopg2.extensions

        info["libpq"] = str(psycopg2.extensions.libpq_version())
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


# --- the report ------------------------------------------------------------------------------

MUST = (
    "mixed results",
    "acknowledged commits missing",
    "rows of commits failed before COMMIT",
    "torn or unknown transactions",
    "client backends left after 5 s",
    "interrupted statements active after 1 s",
    "unexpected exceptions",
    "kills that did not end the worker",
    "hung operations",
    "harness errors",
)


def _label(result: dict[str, Any]) -> str:
    return f"{result['scheduler']}, {IMPLS[result['impl']]}"


def _chaos_cell(result: dict[str, Any], kind: str) -> str:
    counts = result.get("chaos", {}).get(kind)
    if not counts:
        return "n/a" if kind == "deadline" and result["impl"] == "legacy" else "0"
    injected = counts.get("injected", 0)
    landed = counts.get("landed", 0)
    hit = counts.get("hit a statement", 0)
    if kind in ("freeze", "restart"):
        return f"{injected}"
    if kind == "terminate":
        return f"{injected} / {landed}"
    return f"{injected} / {landed} / {hit}"


def _fmt(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def report(results: list[dict[str, Any]], info: dict[str, str], command: str) -> str:
    ok = [r for r in results if "error" not in r]
    lines: list[str] = []
    lines.append(f"Command: `{command}`")
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    lines.extend(f"| {k} | {v} |" for k, v in info.items())
    lines.append("")
    for r in results:
        if "error" in r:
            lines.append(f"**{_label(r)}: {r['error']}**")
            lines.append("")
    if not ok:
        return "\n".join(lines)
    head = "| | " + " | ".join(_label(r) for r in ok) + " |"
    rule = "|---|" + "---|" * len(ok)

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines.append(head)
    lines.append(rule)
    row("seconds, clients", [f"{r['seconds']:g} s, {r['clients']}" for r in ok])
    row("queries (verified replies)", [_fmt(r["queries"]) for r in ok])
    row("queries/s", [f"{r['queries_per_s']:,.0f}" for r in ok])
    row("connections made", [_fmt(r["connects"]) for r in ok])
    row("commits acknowledged", [_fmt(r["transactions"].get("acked", 0)) for r in ok])
    row(
        "commits in doubt (committed)",
        [
            f"{r['transactions'].get('in doubt', 0)} ({r['transactions'].get('in doubt, committed', 0)})"
            for r in ok
        ],
    )
    row(
        "transactions failed before COMMIT",
        [_fmt(r["transactions"].get("failed before COMMIT", 0)) for r in ok],
    )
    lines.append("")
    lines.append(
        "Chaos injected / landed (the interrupt reached the worker) / hit a statement in flight:"
    )
    lines.append("")
    lines.append(head)
    lines.append(rule)
    for kind in KINDS:
        row(
            {
                "timeout": "scheduler `Timeout`",
                "kill": "kill",
                "deadline": "`psycogreen.core.timeout()`",
                "double": "two interrupts expiring together",
                "terminate": "`pg_terminate_backend` (injected / terminated)",
                "freeze": "proxy frozen",
                "restart": "server restarts",
            }[kind],
            [_chaos_cell(r, kind) for r in ok],
        )
    row(
        "seconds frozen",
        [f"{r.get('frozen_s', 0):g}" for r in ok],
    )
    lines.append("")
    lines.append("Checks (**must be 0**):")
    lines.append("")
    lines.append(head)
    lines.append(rule)
    for name in MUST:
        cells = []
        for r in ok:
            value = r["must_be_zero"].get(name, 0)
            text = _fmt(value) if value == 0 else f"**{_fmt(value)}**"
            if name == "interrupted statements active after 1 s":
                text += f" of {r['statements_checked']:,}"
            if name == "unexpected exceptions" and r["unexpected"]:
                text += " (" + ", ".join(f"{k} {v}" for k, v in r["unexpected"].items()) + ")"
            cells.append(text)
        row(name, cells)
    lines.append("")
    lines.append("Figures:")
    lines.append("")
    lines.append(head)
    lines.append(rule)

    def latency(r: dict[str, Any], key: str) -> str:
        value = r.get("latency_ms", {}).get(key, {})
        return f"{value['p50']:g} / {value['max']:g} ({value['n']})" if value.get("n") else "-"

    row(
        "interrupt → exception, median / max (ms) (n): Timeout", [latency(r, "timeout") for r in ok]
    )
    row("same: kill", [latency(r, "kill") for r in ok])
    row("same: two interrupts", [latency(r, "double") for r in ok])
    row("same: any, while the proxy was frozen", [latency(r, "while frozen") for r in ok])
    row(
        "same: frozen, one interrupt (Timeout, kill) in a statement",
        [latency(r, "frozen, one interrupt, in a statement") for r in ok],
    )
    row(
        "hub worst gap (ms), heartbeat every 5 ms",
        [f"{r['hub'].get('worst_ms', '-')}" for r in ok],
    )
    row("hub gap, 99.9th percentile (ms)", [f"{r['hub'].get('p999_ms', '-')}" for r in ok])
    row("gaps over 50 ms", [f"{r['hub'].get('over_50ms', '-')}" for r in ok])
    row(
        "RSS after warm-up → end (MB)",
        [f"{r['rss_mb']['after_warmup']} → {r['rss_mb']['end']}" for r in ok],
    )
    row("RSS growth (MB)", [f"{r['rss_mb']['growth']:+g}" for r in ok])
    row("RSS at half time (MB)", [_half(r) for r in ok])
    row(
        "open fds before → after the run",
        [f"{r['fds']['before']} → {r['fds']['after']}" for r in ok],
    )
    row(
        "greenlets alive before → after",
        [f"{r['greenlets']['before']} → {r['greenlets']['after']}" for r in ok],
    )
    lines.append("")
    exc_types = sorted({k for r in ok for k in r["exceptions"]})
    lines.append("Exceptions the workers caught, by type:")
    lines.append("")
    lines.append(head)
    lines.append(rule)
    for name in exc_types:
        row(f"`{name}`", [_fmt(r["exceptions"].get(name, 0)) for r in ok])
    return "\n".join(lines)


def _half(result: dict[str, Any]) -> str:
    samples = result["rss_mb"].get("samples") or []
    if not samples:
        return "-"
    half = result["seconds"] / 2
    at, size = min(samples, key=lambda s: abs(s[0] - half))
    return f"{size:g} (at {at:g} s)"


def details(results: list[dict[str, Any]]) -> str:
    """Samples of every non-zero must-be-0 count, for the console."""
    out = []
    for r in results:
        for key, items in r.get("samples", {}).items():
            # 1.0.2's statements that stay active are expected: a few show what they are
            shown = items[:3] if key == "still active" and r["impl"] == "legacy" else items
            out.append(f"--- {_label(r)}: {key} ({len(shown)} shown)")
            out.extend(json.dumps(item, indent=1)[:3000] for item in shown)
    return "\n".join(out)


def write_docs(name: str, text: str) -> None:
    begin, end = f"<!-- soak:{name}:begin -->", f"<!-- soak:{name}:end -->"
    page = DOCS.read_text()
    if begin not in page or end not in page:
        raise SystemExit(f"{DOCS} has no {begin} ... {end} section")
    head, _, rest = page.partition(begin)
    _, _, tail = rest.partition(end)
    DOCS.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="each run's length")
    parser.add_argument("--clients", type=int, default=64, help="worker greenlets per run")
    parser.add_argument("--scheduler", choices=("gevent", "eventlet", "both"), default="both")
    parser.add_argument(
        "--legacy", action="store_true", help="also run psycogreen 1.0.2, as the baseline"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--chaos-rate", type=float, default=8.0, help="instant chaos events/s")
    parser.add_argument("--json", type=Path, help="save the raw results there")
    parser.add_argument("--docs", metavar="NAME", help="write the report into docs/soak.md")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    schedulers = ["gevent", "eventlet"] if args.scheduler == "both" else [args.scheduler]
    impls = ["current", "legacy"] if args.legacy else ["current"]
    command = "hatch run soak:run " + " ".join(sys.argv[1:])
    if args.legacy:
        import legacy

        legacy.ensure()  # fetched once, before any run is timed

    server = Server(max_connections=max(200, args.clients * 3 + 50))
    server.start()
    proxy = control = None
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        proxy = ProxyProcess(server.port)
        control = Control(server, proxy)
        prepare_schema(server.dsn)
        info = machine(server)
        info["date"] = dt.date.today().isoformat()
        info["seed"] = str(seed)
        for sched in schedulers:
            for impl in impls:
                config = {
                    "scheduler": sched,
                    "impl": impl,
                    "run_id": f"{sched[0]}{impl[0]}{seed % 100000}",
                    "seconds": args.seconds,
                    "clients": args.clients,
                    "seed": seed,
                    "chaos_rate": args.chaos_rate,
                    "dsn": f"host=127.0.0.1 port={proxy.port} user=postgres dbname=postgres",
                    "direct_dsn": server.dsn,
                    "control": control.path,
                }
                print(f"soak: {sched}, {IMPLS[impl]}, {args.seconds:g} s", file=sys.stderr)
                results.append(run_child(config))
                proxy.command("thaw")
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    finally:
        if control is not None:
            control.close()
        if proxy is not None:
            proxy.close()
        server.stop()
    elapsed = time.monotonic() - started
    text = report(results, info, command)
    print(details(results), file=sys.stderr)
    print(text)
    print(f"\n(all runs: {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=1))
    if args.docs:
        write_docs(args.docs, text)
    failed = [
        r
        for r in results
        if r["impl"] == "current" and ("error" in r or any(r["must_be_zero"].values()))
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
