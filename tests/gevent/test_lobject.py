# SPDX-License-Identifier: BSD-3-Clause
"""Large objects under gevent."""

from __future__ import annotations

from tests.support.checks_lobject import *  # noqa: F403 (the checks every backend passes)
