"""pytest fixtures for test fleets: ``make_fleet`` (per test) and ``make_module_fleet`` (per module).

Each is a factory ``make_fleet(name="t", hosts=3, groups=None, subnet_index="auto", release=None) -> Fleet``;
every fleet it made is destroyed when the test (or module) ends, whether it passed or failed.
Enable with ``pytest_plugins = ["tests.harness.pytest_fixture"]`` in the root conftest.py, or import
the fixtures into a test module. Tests fail (with the reason) when the harness cannot run here, or skip
when the caller allows skips (MTLS_ALLOW_SKIPS=1, tests/no_skips.py).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.no_skips import missing

from .fleet import Fleet
from .inventory import GroupSpec
from .system import missing_tools


def harness_skip_reason() -> str | None:
    """Why fleets cannot be created on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "test-host harness needs root (network namespaces, mounts)"
    missing = missing_tools()
    if missing:
        return f"test-host harness needs {', '.join(missing)} (apt-get install iproute2 openssh-server)"
    return None


class FleetFactory:
    """Creates fleets with state dirs under base_dir; close() destroys all of them (last first)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.fleets: list[Fleet] = []
        self._serial = itertools.count(1)

    def __call__(
        self,
        name: str = "t",
        hosts: int = 3,
        groups: GroupSpec = None,
        subnet_index: int | str = "auto",
        release: str | Sequence[str] | None = None,
    ) -> Fleet:
        state_dir = self.base_dir / f"{name}-{next(self._serial)}"
        fleet = Fleet(name, hosts, state_dir, subnet_index=subnet_index, groups=groups, release=release)
        self.fleets.append(fleet)  # before create(): a failed create still gets a destroy
        return fleet.create()

    def close(self) -> None:
        errors = []
        while self.fleets:
            fleet = self.fleets.pop()
            try:
                fleet.destroy()
            except Exception as exc:  # destroy the others anyway, then report
                errors.append(f"{fleet!r}: {exc}")
        if errors:
            raise RuntimeError("could not destroy test fleets:\n" + "\n".join(errors))


def _factory(tmp_path_factory: pytest.TempPathFactory):
    reason = harness_skip_reason()
    if reason:
        missing(reason)
    factory = FleetFactory(tmp_path_factory.mktemp("fleets"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def make_fleet(tmp_path_factory: pytest.TempPathFactory):
    """Factory for fleets that live until the end of the test."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def make_module_fleet(tmp_path_factory: pytest.TempPathFactory):
    """Factory for fleets shared by the tests of one module (destroyed after the module)."""
    yield from _factory(tmp_path_factory)
