# SPDX-License-Identifier: BSD-3-Clause
"""Connects per second: psycogreen's host-by-host connect against blocking psycopg2.

    python bench/connect.py [--dsn DSN] [--seconds S] [--rounds N]

Without ``--dsn`` (or ``PSYCOGREEN_TEST_DSN``) a throwaway PostgreSQL is started. Each
measurement runs in a process of its own (one scheduler per process): it opens and closes
connections one after the other for S seconds. Rounds alternate the variants, and the table
shows the median of the rounds, and the ratio to blocking psycopg2 for the same target.

Variants: ``blocking`` (psycopg2, no wait callback: libpq's own connect), ``core`` (core's
scheduler-free callback), ``gevent`` and ``eventlet`` (``psycopg2.connect`` after
``patch_psycopg()``). Targets: a numeric address (``host=127.0.0.1``), a name resolved by the
scheduler's resolver (``host=localhost``), and a dead first host (a closed port, refused at
once) before the server.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/ holds a copy.py, named like a standard library module: not first on sys.path.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    del sys.path[0]

CHILD = __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child"
VARIANT = sys.argv[2] if CHILD else ""

if VARIANT == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif VARIANT == "eventlet":
    import warnings

    warnings.simplefilter("ignore")  # eventlet announces its deprecation on import
    import eventlet

    eventlet.monkey_patch()

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

VARIANTS = ("blocking", "core", "gevent", "eventlet")
TARGETS = ("address", "name", "dead-first")


def _target_dsn(dsn: str, target: str) -> str:
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(dsn)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    if target == "address":
        return psycopg2.extensions.make_dsn(**params, host=host, port=port)
    if target == "name":
        return psycopg2.extensions.make_dsn(**params, host="localhost", port=port)
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    return psycopg2.extensions.make_dsn(
        **params, host=f"127.0.0.1,{host}", port=f"{dead},{port}", connect_timeout=5
    )


def child(variant: str, target: str, dsn: str, seconds: float) -> dict[str, Any]:
    import psycopg2

    if variant == "core":
        import psycogreen.core

        psycogreen.core.patch_psycopg("blocking")
    elif variant in ("gevent", "eventlet"):
        import importlib

        importlib.import_module(f"psycogreen.{variant}").patch_psycopg()
    target_dsn = _target_dsn(dsn, target)
    psycopg2.connect(target_dsn).close()  # warm up
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        psycopg2.connect(target_dsn).close()
        count += 1
        now = time.perf_counter()
        if now >= end:
            break
    return {"connects_per_s": count / (now - start), "count": count}


def _run_child(variant: str, target: str, dsn: str, seconds: float) -> float:
    path = os.pathsep.join(
        filter(
            None,
            [
                *(str(ROOT / "packages" / p / "src") for p in ("core", "gevent", "eventlet")),
                os.environ.get("PYTHONPATH"),
            ],
        )
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant, target, dsn, str(seconds)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds * 10 + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}/{target} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["connects_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_TEST_DSN"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    targets = args.targets.split(",")
    server = None
    dsn = args.dsn
    if not dsn:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres()
        server.start()
        dsn = server.dsn
    try:
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for target in targets:
                for variant in variants:
                    rate = _run_child(variant, target, dsn, args.seconds)
                    results.setdefault((variant, target), []).append(rate)
    finally:
        if server is not None:
            server.stop()
    import psycopg2
    import psycopg2.extensions

    print(
        f"connects/s, median of {args.rounds} rounds of {args.seconds:g} s; psycopg2 "
        f"{psycopg2.__version__.split()[0]}, libpq {psycopg2.extensions.libpq_version()}, "
        f"Python {sys.version.split()[0]}\n"
    )
    print("| target | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for target in targets:
        base = statistics.median(results[("blocking", target)]) if "blocking" in variants else None
        cells = []
        for variant in variants:
            rate = statistics.median(results[(variant, target)])
            ratio = f" ({rate / base:.2f}x)" if base and variant != "blocking" else ""
            cells.append(f"{rate:,.0f}{ratio}")
        print(f"| {target} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if CHILD:
        _, _, variant, target, dsn, seconds = sys.argv
        print(json.dumps(child(variant, target, dsn, float(seconds))))
    else:
        main()
