"""`make test` cannot be green while tests skip: skips fail unless allowed; missing packages are named."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SKIPPING = '''
import pytest

@pytest.fixture
def tool():
    pytest.skip("the tool is not installed")

def test_skip_call():
    pytest.skip("no browser")

@pytest.mark.skipif(True, reason="no keytool")
def test_skip_mark():
    pass

def test_skip_fixture(tool):
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False

def test_pass():
    pass
'''


def _pytest(tmp_path, allow):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    # a pytest of its own: none of the outer run's plugins (`ansible-test units` names its own in PYTEST_PLUGINS)
    env = {k: v for k, v in os.environ.items() if k not in ("MTLS_ALLOW_SKIPS", "PYTEST_PLUGINS", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)
    if allow:
        env["MTLS_ALLOW_SKIPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.no_skips", "-p", "no:cacheprovider", "-q", "-rA",
         "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


def test_skips_are_failures_by_default(tmp_path):
    done = _pytest(tmp_path, allow=False)
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed, 1 xfailed, 2 errors" in done.stdout  # skips in setup: errors
    for reason in ("no browser", "no keytool", "the tool is not installed"):
        assert reason in done.stdout
    assert "MTLS_ALLOW_SKIPS=1" in done.stdout


def test_skips_stay_skips_when_allowed(tmp_path):
    done = _pytest(tmp_path, allow=True)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in done.stdout


def _system_packages(_tmp, listing, *args, env=None):
    """.ci/system-packages on a package list of our own, as nobody (not root: no install)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="mtls-packages-"))  # pytest's tmp_path is root-only
    tmp_path.chmod(0o755)
    script = tmp_path / "system-packages"
    shutil.copy(ROOT / ".ci" / "system-packages", script)
    (tmp_path / "packages.txt").write_text(listing)
    environ = {"PATH": os.environ["PATH"], "MTLS_PACKAGES": str(tmp_path / "packages.txt"), **(env or {})}
    argv = [str(script), *args]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    try:
        return subprocess.run(argv, env=environ, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(tmp_path)


LISTING = "# comment\nshell: sh   # present\nno-such-package-x: no-such-tool-x sh\ncoreutils: ls\n"


def test_missing_packages_are_listed(tmp_path):
    done = _system_packages(tmp_path, LISTING, "missing")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["no-such-package-x"]


def test_missing_packages_fail_when_they_cannot_be_installed(tmp_path):
    done = _system_packages(tmp_path, LISTING, "ensure")
    assert done.returncode == 1
    assert "missing: no-such-package-x" in done.stderr


def test_missing_packages_are_a_warning_when_skips_are_allowed(tmp_path):
    done = _system_packages(tmp_path, LISTING, "ensure", env={"MTLS_ALLOW_SKIPS": "1"})
    assert done.returncode == 0
    assert "WARNING" in done.stderr and "no-such-package-x" in done.stderr


def test_nothing_missing_is_silent(tmp_path):
    done = _system_packages(tmp_path, "shell: sh\n", "ensure")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
