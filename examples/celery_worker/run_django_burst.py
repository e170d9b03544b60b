"""Send N ``django_query`` tasks at once: ``python run_django_burst.py N SECONDS``.

Prints one JSON line: the results and the time from sending until every result was back.
"""

from __future__ import annotations

import json
import sys
import time

from celery import group
from tasks import django_query

if __name__ == "__main__":
    n, seconds = int(sys.argv[1]), float(sys.argv[2])
    django_query.delay(0).get(timeout=60)  # the worker is up, Django set up, the pool open
    start = time.time()
    results = group(django_query.s(seconds) for _ in range(n)).apply_async().get(timeout=120)
    print(json.dumps({"elapsed": time.time() - start, "results": results}))
