# SPDX-License-Identifier: BSD-3-Clause
from __future__ import annotations

import pytest

from tests.support.env import require


@pytest.fixture(scope="session")
def scheduler() -> str:
    """The scheduler this directory's tests run under (each in its own subprocess)."""
    require("gevent")
    require("psycogreen.gevent")
    return "gevent"
