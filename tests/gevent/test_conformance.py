# SPDX-License-Identifier: BSD-3-Clause
"""psycopg2 as a program knows it, under gevent once patched."""

from __future__ import annotations

from tests.support.checks_conformance import *  # noqa: F403 (the checks every backend passes)
