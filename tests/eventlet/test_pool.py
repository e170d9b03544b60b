# SPDX-License-Identifier: BSD-3-Clause
"""The pool suite, run under eventlet."""

from __future__ import annotations

from tests.support.suite_pool import *  # noqa: F403 (the suite every backend passes)
