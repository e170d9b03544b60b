# SPDX-License-Identifier: BSD-3-Clause
"""psycopg2 is optional at install time: importing psycogreen works without it, patching says
what to install."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys
sys.modules["psycopg2"] = None          # as if neither psycopg2 nor psycopg2-binary were installed
import psycogreen.core as core
out = {"imported": True}
try:
    core.patch_psycopg("blocking")
except core.PsycopgNotFoundError as exc:
    out["error"] = str(exc)
    out["is_import_error"] = isinstance(exc, ImportError)
print(json.dumps(out))
"""


def test_import_without_psycopg2_and_a_clear_error_at_patch_time() -> None:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["imported"] is True
    assert "pip install psycopg2-binary" in out["error"]
    assert out["is_import_error"] is True
