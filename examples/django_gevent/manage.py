#!/usr/bin/env python
"""Django's command-line utility, for commands that run green threads.

Monkey-patch before Django (or anything else) is imported; psycogreen-gevent's plugin patches
psycopg2 inside ``patch_all()``. Under gunicorn's gevent worker this file is not used.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402 (after monkey-patching, on purpose)
import sys  # noqa: E402

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recipe.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
