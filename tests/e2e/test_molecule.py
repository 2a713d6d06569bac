"""`molecule test` on the default scenario (molecule/default): create a 3-host fleet with tests/harness,
converge with mtls.rollout.site, converge again (idempotence: changed=0 everywhere), verify, destroy."""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, recap
from tests.harness.fleet import destroy as destroy_fleet
from tests.harness.pytest_fixture import harness_skip_reason

HOSTS = ["localhost", "mol-1", "mol-2", "mol-3"]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# molecule writes "[default > step] Executing" without colours, "default \u279c step: Executing" with them
ARROW = "(?:>|\u279c)"
TIMEOUT = 600


def _molecule_bin():
    """molecule next to the running Python (the project venv), else the project venv's, else PATH's."""
    for candidate in (Path(sys.executable).parent / "molecule", Path(ROOT, ".venv", "bin", "molecule")):
        if candidate.exists():
            return str(candidate)
    return shutil.which("molecule")


@pytest.fixture
def molecule_env(tmp_path):
    reason = harness_skip_reason()  # not root, or iproute2/sshd missing
    if reason:
        pytest.skip(f"molecule's default scenario runs on harness hosts: {reason}")
    molecule = _molecule_bin()
    if not molecule:
        pytest.skip("molecule is not installed (make venv)")
    env = dict(os.environ)
    for name in list(env):  # nothing from an outer molecule or ansible run may leak in
        if name.startswith(("MOLECULE_", "ANSIBLE_")):
            del env[name]
    env.update({
        "PATH": os.path.dirname(molecule) + os.pathsep + env.get("PATH", ""),
        # A private ephemeral directory: a developer's own `molecule test` (which uses
        # ~/.ansible/tmp/molecule.*.default) is not disturbed, and the fleet's state dir is known here.
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "molecule"),
        "NO_COLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
    })
    yield molecule, env
    # Safety net: `molecule test` destroys the fleet itself (--destroy=always), also after a failure;
    # this covers a molecule that was killed on timeout or crashed before its last destroy.
    destroy_fleet(tmp_path / "molecule" / "fleet")


def _sections(output):
    """{step: output of that step} from molecule's 'INFO [default > STEP] Executing' markers."""
    found = {}
    marks = list(re.finditer(rf"^INFO\s+\[?default {ARROW} (\w+)\]?:? Executing\s*$", output, re.M))
    for mark, following in zip(marks, marks[1:] + [None]):
        found.setdefault(mark.group(1), []).append(output[mark.end():following.start() if following else None])
    return found


def _run(argv, env):
    """(returncode, output without ANSI codes); on timeout the whole process group is killed."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: ansible-playbook children die with it
    try:
        out = proc.communicate(timeout=TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        pytest.fail(f"{' '.join(argv[1:])} did not finish in {TIMEOUT} s:\n{ANSI.sub('', out)[-6000:]}")
    return proc.returncode, ANSI.sub("", out)


def test_molecule_test_passes_with_an_idempotent_second_converge(molecule_env):
    molecule, env = molecule_env
    rc, out = _run([molecule, "test", "--scenario-name", "default", "--destroy", "always"], env)
    assert rc == 0, f"molecule test failed ({rc}):\n{out[-8000:]}"

    steps = _sections(out)
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert step in steps, f"molecule test did not run {step}:\n{out[-4000:]}"
        assert re.search(rf"^default {ARROW} {step}: Executed: Successful", out, re.M), f"{step}:\n{out[-4000:]}"

    first = recap(steps["converge"][0])
    assert sorted(first) == HOSTS, first
    assert all(counts["failed"] == 0 for counts in first.values())
    assert sum(counts["changed"] for counts in first.values()) > 0, "the first converge changed nothing"

    # molecule's idempotence step fails by itself on any changed=N>0; check it really ran on every host.
    second = recap(steps["idempotence"][0])
    assert sorted(second) == HOSTS, second
    for host, counts in second.items():
        assert counts["changed"] == 0 and counts["failed"] == 0, f"{host} on the second converge: {counts}"

    checks = recap(steps["verify"][0])
    assert set(HOSTS[1:]) <= set(checks) and all(c["failed"] == 0 for c in checks.values()), checks
    assert re.search(r"^default\s*: actions=\d+\s+successful=\d+\s.*\bfailed=0\b", out, re.M), out[-2000:]

    # Cleaned up: the fleet's state dir is gone (the harness removes it when the fleet is destroyed).
    assert not Path(env["MOLECULE_EPHEMERAL_DIRECTORY"], "fleet", "fleet.json").exists()
