# SPDX-License-Identifier: BSD-3-Clause
"""Interruptions and misuse, run under eventlet."""

from __future__ import annotations

from tests.support.suite_interrupt import *  # noqa: F403 (the suite every backend passes)
