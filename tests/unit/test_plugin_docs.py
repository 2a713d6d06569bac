"""Every plugin has documentation ansible-doc can show; modules share the attribute and requirement fragments."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the venv's ansible-doc; under `ansible-test units` (whose venv has none) the one ansible-test puts on PATH
ANSIBLE_DOC = shutil.which("ansible-doc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))
HOST_SIDE = {"install_files", "host_key", "host_pkcs12", "host_java_store"}  # stdlib only on managed hosts
CONTROL_NODE = set(MODULES) - HOST_SIDE - {"probe"}  # probe: any host


def _docs(kind, names):
    done = subprocess.run([ANSIBLE_DOC, "-t", kind, "--json", *[f"mtls.rollout.{n}" for n in names]],
                          capture_output=True, text=True, check=False, env={**os.environ})
    assert done.returncode == 0, done.stderr
    return {name.split(".")[-1]: value["doc"] for name, value in json.loads(done.stdout).items()}


@pytest.fixture(scope="module")
def module_docs():
    return _docs("module", MODULES)


def test_every_module_documents_the_shared_attributes(module_docs):
    assert sorted(module_docs) == MODULES
    for name, doc in module_docs.items():
        assert {"check_mode", "diff_mode", "idempotent"} <= set(doc["attributes"]), name
        assert doc["attributes"]["idempotent"]["support"] == "full", name


def test_modules_name_what_they_need(module_docs):
    for name in CONTROL_NODE:
        assert any(r.startswith("cryptography >= ") for r in module_docs[name].get("requirements", [])), name
    assert any("cryptography" in r for r in module_docs["probe"]["requirements"])
    assert "requirements" not in module_docs["install_files"]  # runs on managed hosts with the stdlib only
    for name in ("host_key", "host_pkcs12"):  # the stdlib and the host's openssl command, no Python library
        assert [r for r in module_docs[name]["requirements"] if "cryptography" in r] == [], name
        assert any("openssl" in r for r in module_docs[name]["requirements"]), name
    assert any("keytool" in r for r in module_docs["host_java_store"]["requirements"])  # and the stdlib only
    assert [r for r in module_docs["host_java_store"]["requirements"] if "cryptography" in r] == []


@pytest.mark.parametrize("kind, names", [
    ("filter", ["server_certificates", "client_certificates", "verify_depth", "pem_bundle", "certificate_hosts",
                "rotation_plan", "rotation_phase"]),
    ("test", ["ip_address"]),
])
def test_filters_and_tests_are_documented(kind, names):
    docs = _docs(kind, names)
    assert sorted(docs) == sorted(names)
    for name, doc in docs.items():
        assert doc["short_description"] and doc["options"]["_input"], name
