"""Send N ``sleep_query`` tasks at once and wait for them all: ``python run_burst.py N SECONDS``.

Sends one burst of ``pg_sleep(0)`` tasks first (Celery's own cost of moving N tasks through the
broker, the worker and the result backend), then the burst of ``pg_sleep(SECONDS)`` tasks. For
each, prints ``finished``: the time from sending the first task until the last one finished
(by the task's own wall-clock stamp), and ``collected``: until this client had every result.
One JSON line. This client is an ordinary, unpatched process.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from celery import group
from tasks import sleep_query


def burst(n: int, seconds: float) -> dict[str, Any]:
    start = time.time()
    results = group(sleep_query.s(seconds) for _ in range(n)).apply_async().get(timeout=120)
    collected = time.time() - start
    finished = max(r["finished"] for r in results) - start
    return {"finished": finished, "collected": collected, "results": results}


if __name__ == "__main__":
    n, seconds = int(sys.argv[1]), float(sys.argv[2])
    sleep_query.delay(0).get(timeout=60)  # the worker is up and has imported everything
    baseline = burst(n, 0)
    measured = burst(n, seconds)
    print(json.dumps({"baseline": baseline, "measured": measured}))
