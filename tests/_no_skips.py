"""pytest plugin of scripts/test.sh: a skipped test fails the run.

On a fresh install (`pip install .[torch,test,fixtures]`) every test must run. A test that skips
(a missing optional package through `pytest.importorskip`, a `pytest.skip` call, a skip mark, a
module skipped at collection) would otherwise let the run pass without it. Loaded with
`python3 -m pytest -p tests._no_skips tests` from the repository root (`python3 -m` puts the root
on sys.path). An expected failure (`xfail`) is not a skip: the test runs, and `strict=True` makes
an unexpected pass fail.
"""

from __future__ import annotations

import pytest


class NoSkips:
    """Collects the skipped tests and modules, lists them and turns a passing run into a failure."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        self.skipped.append(f"{report.nodeid or report.fspath}: {reason}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self._record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # An xfailed test is reported as skipped with `wasxfail` set: it ran, so it counts.
        if report.skipped and not hasattr(report, "wasxfail"):
            self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skipped and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.skipped:
            terminalreporter.section("skipped (not allowed: every test must run)", sep="=", red=True)
            for line in self.skipped:
                terminalreporter.line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(NoSkips(), "no-skips")
