# SPDX-License-Identifier: BSD-3-Clause
"""What the test environment must provide, and how missing pieces are reported.

Locally a missing scheduler or server skips the tests that need it; under ``CI=true`` it fails
them, so that a missing install step cannot hide behind a green run.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip (locally) or fail (under CI) because ``reason``."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require(module: str) -> ModuleType:
    """Import ``module``, or skip/fail saying it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(f"{module} cannot be imported: {exc}")
        raise  # pragma: no cover (missing() does not return)
