# SPDX-License-Identifier: BSD-3-Clause
"""Run psycopg2's test suite in one mode: ``python -m tests.support.conformance_run MODE DIR OUT``.

MODE is ``plain`` (psycopg2 as installed), ``gevent`` or ``eventlet``
(``psycogreen.<scheduler>.patch_psycopg()`` first: every wait goes through that scheduler's
hub). DIR holds ``psycopg2_tests`` (``tests.support.psycopg2_suite``). One line
of JSON per event is appended to OUT as the suite runs (``{"start": id}``, then ``{"id": id,
"outcome": ...}``), so that a crash or a hang still tells which test it was in.

psycopg2's ``PSYCOPG2_TEST_GREEN`` is left unset on purpose: it would skip the tests psycopg2
knows fail in green mode, which are exactly the ones psycogreen must pass.

The standard library is not monkey-patched: the suite is a program written for OS threads and
blocking sleeps, and monkey-patching would turn its threads into greenlets that never yield
(``test_connection.ConnectionTests.test_commit_concurrency`` loops on an idle ``commit()``
that sends nothing, and so starves the hub): that would measure the suite, not psycopg2's API.
psycopg2 itself is patched exactly as a gevent or eventlet program patches it.
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import sys
import unittest
from typing import Any, TextIO

# A test that hangs (a wait that never ends) dumps every stack and ends the run: the last
# "start" line names it.
PER_TEST_LIMIT = 120


def _name(test: unittest.TestCase) -> str:
    # "psycopg2_tests.test_copy.CopyTests.test_copy_from" -> "test_copy.CopyTests.test_copy_from"
    return test.id().removeprefix("psycopg2_tests.")


class Recorder(unittest.TestResult):
    """A result that writes each test's outcome as it ends."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out
        self.failed_subtests: set[str] = set()

    def _emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        faulthandler.dump_traceback_later(PER_TEST_LIMIT, exit=True)
        self._emit({"start": _name(test)})

    def stopTest(self, test: unittest.TestCase) -> None:
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

    def _outcome(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        self._emit({"id": _name(test), "outcome": outcome, "detail": detail[-3000:]})

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        if _name(test) in self.failed_subtests:
            self._outcome(test, "fail", "a subtest failed")
        else:
            self._outcome(test, "pass")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._outcome(test, "fail", self.failures[-1][1])

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._outcome(test, "error", self.errors[-1][1])
        else:  # a class or module fixture (setUpClass): no test id of its own
            self._emit({"id": str(test), "outcome": "error", "detail": self.errors[-1][1]})

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._outcome(test, "skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._outcome(test, "xfail")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._outcome(test, "xpass")

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.failed_subtests.add(_name(test))


def patch(mode: str) -> None:
    """Patch psycopg2 as a psycogreen user's program does (nothing for ``plain``)."""
    if mode == "plain":
        return
    backend = importlib.import_module(f"psycogreen.{mode}")
    backend.patch_psycopg()


def main() -> None:
    suite_parent, out_path = sys.argv[2], sys.argv[3]
    sys.path.insert(0, suite_parent)
    patch(sys.argv[1])
    suite_module = importlib.import_module("psycopg2_tests")  # sets warnings to "error"
    suite = suite_module.test_suite()
    only = sys.argv[4:]  # test ids to run (all by default)
    if only:
        wanted = set(only)
        suite = unittest.TestSuite(t for t in _flatten(suite) if _name(t) in wanted)
    with open(out_path, "a", encoding="utf-8") as out:  # noqa: PTH123
        result = Recorder(out)
        suite.run(result)
        out.write(json.dumps({"done": result.testsRun}) + "\n")


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    tests: list[unittest.TestCase] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            tests.extend(_flatten(item))
        else:
            tests.append(item)
    return tests


if __name__ == "__main__":
    main()
