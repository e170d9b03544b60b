# SPDX-License-Identifier: BSD-3-Clause
"""Connects per second: psycogreen's host-by-host connect against blocking psycopg2.

    python bench/connect.py [--dsn DSN] [--seconds S] [--rounds N]

Without ``--dsn`` a throwaway PostgreSQL is started. Each variant runs in a process of its own
(one scheduler per process), kept for the whole run; a burst opens and closes connections one
after the other for S seconds. Every round runs one burst of each variant, back to back in a
random order, per target; the table shows the median rate, and the median of the per-round
ratios to blocking psycopg2 (the load of a shared machine drifts; within a round it mostly
cancels out).

Variants: ``blocking`` (psycopg2, no wait callback: libpq's own connect), ``core`` (core's
scheduler-free callback), ``gevent`` and ``eventlet`` (``psycopg2.connect`` after
``patch_psycopg()``). Targets: a numeric address (``host=127.0.0.1``), a name from
``/etc/hosts`` (``host=localhost``, which psycogreen leaves to the C library when the system
reads that file first), the same name sent through the scheduler's resolver as any other
name is (``resolver``: the hosts-file shortcut turned off), and a dead first host (a closed
port, refused at once) before the server.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(1, str(ROOT))  # tests.support: the monkey-patching, the throwaway server

CHILD = __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child"
VARIANT = sys.argv[2] if CHILD else ""

from tests.support.monkey import patch_for  # noqa: E402 (patches before anything else)

patch_for(VARIANT)

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

VARIANTS = ("blocking", "core", "gevent", "eventlet")
TARGETS = ("address", "name", "resolver", "dead-first")


def _target_dsn(dsn: str, target: str) -> str:
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(dsn)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    if target == "address":
        return psycopg2.extensions.make_dsn(**params, host=host, port=port)
    if target in ("name", "resolver"):
        return psycopg2.extensions.make_dsn(**params, host="localhost", port=port)
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    return psycopg2.extensions.make_dsn(
        **params, host=f"127.0.0.1,{host}", port=f"{dead},{port}", connect_timeout=5
    )


def child(variant: str, dsn: str) -> None:
    """Serve bursts: read ``TARGET SECONDS`` lines, answer each with a JSON line."""
    import psycopg2

    if variant == "core":
        import psycogreen.core

        psycogreen.core.patch_psycopg("blocking")
    elif variant in ("gevent", "eventlet"):
        import importlib

        importlib.import_module(f"psycogreen.{variant}").patch_psycopg()
    from psycogreen.core import _connect_hosts

    hosts_file = _connect_hosts.answered_locally
    dsns = {target: _target_dsn(dsn, target) for target in TARGETS}
    for target_dsn in dsns.values():
        psycopg2.connect(target_dsn).close()  # warm up
    print(json.dumps({"ready": variant}), flush=True)
    for line in sys.stdin:
        target, seconds = line.split()
        target_dsn = dsns[target]
        # "resolver": every name goes to the scheduler's resolver (no effect on libpq's own).
        _connect_hosts.answered_locally = (
            (lambda _host: False) if target == "resolver" else hosts_file
        )
        count = 0
        start = time.perf_counter()
        end = start + float(seconds)
        while True:
            psycopg2.connect(target_dsn).close()
            count += 1
            now = time.perf_counter()
            if now >= end:
                break
        print(json.dumps({"connects_per_s": count / (now - start)}), flush=True)


class _Child:
    """A measuring process of one variant, kept between bursts."""

    def __init__(self, variant: str, dsn: str) -> None:
        path = os.pathsep.join(
            filter(
                None,
                [
                    *(str(ROOT / "packages" / p / "src") for p in ("core", "gevent", "eventlet")),
                    os.environ.get("PYTHONPATH"),
                ],
            )
        )
        self.variant = variant
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", variant, dsn],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.variant} process ended (exit {self.proc.wait()})")
        return dict(json.loads(line))

    def burst(self, target: str, seconds: float) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{target} {seconds}\n")
        self.proc.stdin.flush()
        return float(self._read()["connects_per_s"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="the server to connect to (default: a throwaway one)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one burst")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    if "blocking" not in variants:
        variants.insert(0, "blocking")
    targets = args.targets.split(",")
    server = None
    dsn = args.dsn
    if not dsn:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres()
        server.start()
        dsn = server.dsn
    children: list[_Child] = []
    rates: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    try:
        children = [_Child(variant, dsn) for variant in variants]
        rng = random.Random(4)
        for _ in range(args.rounds):
            for target in targets:
                # Each round measures every variant back to back, in a random order: the
                # machine's load drifts, and a ratio within one round cancels most of it.
                order = list(children)
                rng.shuffle(order)
                measured = {c.variant: c.burst(target, args.seconds) for c in order}
                for variant, rate in measured.items():
                    rates.setdefault((variant, target), []).append(rate)
                    ratio = rate / measured["blocking"]
                    ratios.setdefault((variant, target), []).append(ratio)
    finally:
        for child_ in children:
            child_.close()
        if server is not None:
            server.stop()
    import psycopg2
    import psycopg2.extensions

    print(
        f"connects/s (median of {args.rounds} rounds of {args.seconds:g} s bursts) and, in "
        f"parentheses, the median ratio to blocking psycopg2 within a round; psycopg2 "
        f"{psycopg2.__version__.split()[0]}, libpq {psycopg2.extensions.libpq_version()}, "
        f"Python {sys.version.split()[0]}\n"
    )
    print("| target | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for target in targets:
        cells = []
        for variant in variants:
            rate = statistics.median(rates[(variant, target)])
            ratio = statistics.median(ratios[(variant, target)])
            cells.append(f"{rate:,.0f}" + ("" if variant == "blocking" else f" ({ratio:.2f}x)"))
        print(f"| {target} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if CHILD:
        child(sys.argv[2], sys.argv[3])
    else:
        main()
