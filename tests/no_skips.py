"""A skipped test is a failed test: a missing tool must not turn `make test` green.

Loaded by tests/conftest.py. A caller who runs a subset on purpose sets ``MTLS_ALLOW_SKIPS=1``
(``make test ALLOW_SKIPS=1``); then skips stay skips. Expected failures (xfail) are left alone.
"""

import os

import pytest

ALLOW_SKIPS = "MTLS_ALLOW_SKIPS"
HINT = f"a skip is a failure; set {ALLOW_SKIPS}=1 (make test ALLOW_SKIPS=1) to run a subset on purpose"


def skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIPS) == "1"


def missing(reason: str) -> None:
    """Stop the test for something this machine lacks: a failure, or a skip when skips are allowed."""
    if skips_allowed():
        pytest.skip(reason)
    pytest.fail(f"{reason} ({HINT})", pytrace=False)


def _fail_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and not skips_allowed():
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"{reason}\n({HINT})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result())
