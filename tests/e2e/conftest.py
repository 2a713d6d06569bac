"""Fixtures of the end-to-end tests: test fleets (tests/harness) and a working ansible-playbook."""

import subprocess

import pytest

from tests.e2e.helpers import ansible_env
from tests.no_skips import missing
from tests.harness.pytest_fixture import make_fleet, make_module_fleet  # noqa: F401 - fixtures, used by name


@pytest.fixture(scope="session")
def ansible_ok():
    if subprocess.run(["ansible-playbook", "--version"], capture_output=True, env=ansible_env()).returncode:
        missing("ansible-playbook is not available")
