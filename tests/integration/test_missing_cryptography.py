"""Every module that needs the cryptography library fails with Ansible's missing_required_lib message when
the Python that runs it has none: a real interpreter without it (a bare venv), no import blocked by hand.

The module_utils guard their cryptography imports so that they import without it (ansible-test's import
sanity test); this proves the modules still notice and say so instead of failing later on a NameError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / ".cache" / "collections"

# module -> arguments that pass its argument spec (the check for cryptography comes after it)
MODULES = {
    "ca": {"name": "root", "pki_dir": "{tmp}/pki"},
    "certificates": {"issuer": "root", "pki_dir": "{tmp}/pki", "certificates": [{"name": "web"}]},
    "crl": {"pki_dir": "{tmp}/pki"},
    "report": {"pki_dir": "{tmp}/pki"},
    "verify": {"certificate": "{tmp}/c.pem", "ca_file": "{tmp}/ca.pem"},
    "probe": {"host": "127.0.0.1", "port": 9},
}


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A Python with the standard library only (the modules get ansible's module_utils from AnsiballZ)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import cryptography"], capture_output=True, check=False)
    assert probe.returncode != 0, "the bare venv can import cryptography: the test would prove nothing"
    return python


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_names_the_missing_library(module, bare_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_CONFIG=str(tmp_path / "none.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    run = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={bare_python}",
         "-m", f"mtls.rollout.{module}", "-a", json.dumps(MODULES[module]).replace("{tmp}", str(tmp_path))],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0, run.stdout + run.stderr
    head, sep, result = run.stdout.partition("localhost | FAILED! => ")
    assert sep, run.stdout + run.stderr
    msg = json.loads(result)["msg"]
    assert msg.startswith("Failed to import the required Python library (cryptography) on "), msg
    assert str(bare_python) in msg, msg
