# SPDX-License-Identifier: BSD-3-Clause
"""Run one scenario in a monkey-patched process: ``python -m tests.support.green SCHED NAME [JSON]``.

The first thing this module does is monkey-patch for SCHED (``gevent``, ``eventlet``, or
``none`` for an unpatched process); then it imports the scenario module and runs the scenario
function NAME with the JSON keyword arguments, and prints its JSON result as the last line of
stdout. One scheduler per process: the tests run this in a subprocess.
"""

from __future__ import annotations

import sys

SCHED = sys.argv[1] if __name__ == "__main__" else "none"

if SCHED == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif SCHED == "eventlet":
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import eventlet

    eventlet.monkey_patch()

import json  # noqa: E402 (after monkey-patching, on purpose)
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402


class Scheduler:
    """The few scheduler operations the scenarios need, the same for gevent and eventlet."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "gevent":
            import gevent

            self._g = gevent
            self.Timeout = gevent.Timeout
            self.Kill = gevent.GreenletExit
        elif name == "eventlet":
            import eventlet
            import greenlet

            self._e = eventlet
            self.Timeout = eventlet.Timeout
            self.Kill = greenlet.GreenletExit
        else:
            self.Timeout = TimeoutError
            self.Kill = SystemExit

    def spawn(self, func: Callable[..., Any], *args: Any) -> Any:
        if self.name == "gevent":
            return self._g.spawn(func, *args)
        return self._e.spawn(func, *args)

    def join(self, tasks: list[Any]) -> list[Any]:
        """Wait for every task; return results (exceptions are returned, not raised)."""
        out = []
        for task in tasks:
            try:
                out.append(task.get() if self.name == "gevent" else task.wait())
            except BaseException as exc:
                out.append(exc)
        return out

    def kill(self, task: Any) -> None:
        task.kill()

    def sleep(self, seconds: float) -> None:
        if self.name == "gevent":
            self._g.sleep(seconds)
        else:
            self._e.sleep(seconds)

    def timeout(self, seconds: float) -> Any:
        return self.Timeout(seconds)

    def wait_read(self, fd: int, timeout: float | None = None) -> None:
        if self.name == "gevent":
            from gevent.socket import wait_read

            wait_read(fd, timeout)
        else:
            from eventlet.hubs import trampoline

            trampoline(fd, read=True, timeout=timeout)


class Heartbeat:
    """A task that ticks every ``interval`` seconds and records the worst gap between ticks."""

    def __init__(self, sched: Scheduler, interval: float = 0.01) -> None:
        self.sched = sched
        self.interval = interval
        self.gaps: list[float] = []
        self.running = True
        self.task = sched.spawn(self._run)

    def _run(self) -> None:
        last = time.perf_counter()
        while self.running:
            self.sched.sleep(self.interval)
            now = time.perf_counter()
            self.gaps.append(now - last - self.interval)
            last = now

    def stop(self) -> float:
        self.running = False
        self.sched.join([self.task])
        return max(self.gaps, default=0.0)


def ctrl_c_after(seconds: float) -> None:
    """Deliver a real SIGINT to the main thread after ``seconds``, as Ctrl-C at a terminal does.

    Not ``os.kill()`` from a helper thread: Linux >= 6.4 hands a process-directed signal to the
    sending thread when it can take it, and a main thread busy in Python plus short GIL-releasing
    C calls (a COPY loop) can starve that thread of the GIL for seconds, so the signal's arrival
    would measure CPython's thread scheduling instead of the code under test. The kernel's
    interval timer fires in the main thread; its handler raises SIGINT there.
    """
    import signal

    signal.signal(signal.SIGALRM, lambda _sig, _frame: signal.raise_signal(signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, seconds)


@contextmanager
def heartbeat(sched: Scheduler, interval: float = 0.01) -> Iterator[Heartbeat]:
    hb = Heartbeat(sched, interval)
    try:
        yield hb
    finally:
        hb.stop()


def main() -> None:
    name = sys.argv[2]
    kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    # "function" runs tests.support.scenarios.function; "module:function" runs
    # tests.support.module.function.
    module, _, function = name.rpartition(":")
    import importlib

    scenarios = importlib.import_module(f"tests.support.{module or 'scenarios'}")
    func = getattr(scenarios, function)
    result = func(Scheduler(SCHED), os.environ["PSYCOGREEN_TEST_DSN"], **kwargs)
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
