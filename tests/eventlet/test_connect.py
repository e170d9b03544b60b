# SPDX-License-Identifier: BSD-3-Clause
"""The connect suite, run under eventlet."""

from __future__ import annotations

from tests.support.suite_connect import *  # noqa: F403 (the suite every backend passes)
