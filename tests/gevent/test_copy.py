# SPDX-License-Identifier: BSD-3-Clause
"""COPY under gevent."""

from __future__ import annotations

from tests.support.suite_copy import *  # noqa: F403 (the COPY suite every backend passes)
