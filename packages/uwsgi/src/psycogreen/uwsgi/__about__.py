# SPDX-License-Identifier: BSD-3-Clause
"""The version of psycogreen-uwsgi."""

from __future__ import annotations

__version__ = "1.0.0"
