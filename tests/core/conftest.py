# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures shared by the scheduler-free core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fakes import FakeFactory


@pytest.fixture
def fakes() -> Iterator[FakeFactory]:
    """Scripted connections (``fakes(POLL_READ, POLL_OK)``), closed after the test."""
    factory = FakeFactory()
    yield factory
    factory.close()
