"""Fixtures of the end-to-end tests: test fleets (tests/harness) and a working ansible-playbook."""

import subprocess

import pytest

from tests.e2e.helpers import ansible_env
from tests.no_skips import missing
from tests.harness import pytest_fixture

# the test fleets' fixtures, used by name
make_fleet = pytest_fixture.make_fleet
make_module_fleet = pytest_fixture.make_module_fleet


@pytest.fixture(scope="session")
def ansible_ok():
    if subprocess.run(["ansible-playbook", "--version"], capture_output=True, env=ansible_env(), check=False).returncode:
        missing("ansible-playbook is not available")
