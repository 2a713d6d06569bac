"""The collection in an execution environment, as AWX runs it.

* ``ansible-builder create`` on an EE definition that asks for the built tarball yields a build context;
  replaying that context's collection step (``ansible-galaxy collection install -r _build/requirements.yml``)
  and its ``introspect.py`` (what the image build runs) gives exactly the collection's runtime
  requirements (requirements.txt, bindep.txt) -- no development pins;
* ``ansible-runner`` runs ``mtls.rollout.site`` from the installed tarball in a fresh private data dir
  (localhost only, so just the PKI play) and the CAs appear in the store.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration import test_modules_playbook
from tests.integration.test_modules_playbook import BIN, ROOT

installed = test_modules_playbook.installed  # the fixture: the collection built and installed once


def _lines(path: Path) -> list[str]:
    """Requirement lines without comments (introspect appends '# from collection ...')."""
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def ee_collections(installed, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The build context of an EE with the tarball, and the collections its galaxy step installs."""
    base = tmp_path_factory.mktemp("ee")
    (base / "execution-environment.yml").write_text(yaml.safe_dump({
        "version": 3,
        "images": {"base_image": {"name": "quay.io/ansible/awx-ee:latest"}},  # create does not pull it
        "dependencies": {"galaxy": {"collections": [{"name": str(installed.tarball), "type": "file"}]}},
    }))
    done = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", "context"],
                          cwd=base, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    context = base / "context"
    collections = base / "usr-share-ansible-collections"
    done = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-r",
                           str(context / "_build" / "requirements.yml"), "-p", str(collections)],
                          env={**installed.env, "ANSIBLE_COLLECTIONS_PATH": str(collections)}, cwd=base, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return context, collections


def test_ee_gets_only_the_runtime_requirements(ee_collections, tmp_path):
    context, collections = ee_collections
    done = subprocess.run([str(BIN / "python"), str(context / "_build" / "scripts" / "introspect.py"), "introspect",
                           f"--write-pip={tmp_path / 'requirements.txt'}", f"--write-bindep={tmp_path / 'bindep.txt'}",
                           str(collections)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _lines(tmp_path / "requirements.txt") == _lines(ROOT / "requirements.txt") == ["cryptography>=44"]
    assert _lines(tmp_path / "bindep.txt") == _lines(ROOT / "bindep.txt")


def test_tarball_holds_no_development_files(installed):  # noqa: F811
    root = installed.collections / "ansible_collections" / "mtls" / "rollout"
    for name in ("requirements-dev.txt", "requirements-dev.in", "Makefile", "bench", "molecule", ".ci"):
        assert not (root / name).exists(), name
    for name in ("requirements.txt", "bindep.txt", "meta/execution-environment.yml"):
        assert (root / name).is_file(), name


def test_ansible_runner_runs_site_from_the_installed_tarball(ee_collections, installed, tmp_path):  # noqa: F811
    collections = ee_collections[1]
    data = tmp_path / "runner"
    for sub in ("inventory", "env", "project"):
        (data / sub).mkdir(parents=True)
    (data / "inventory" / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))  # no servers, no clients: PKI only
    (data / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
    }))
    store = tmp_path / "pki"
    (data / "env" / "extravars").write_text(yaml.safe_dump({"mtls_pki_dir": str(store)}))
    env = {k: v for k, v in installed.env.items() if not k.startswith("ANSIBLE_")}
    done = subprocess.run([str(BIN / "ansible-runner"), "run", str(data), "-p", "mtls.rollout.site", "--ident", "job"],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    artifacts = data / "artifacts" / "job"
    assert done.returncode == 0, done.stdout + done.stderr
    assert (artifacts / "status").read_text() == "successful"
    for ca in ("root", "server-ca", "client-ca"):
        assert (store / "ca" / ca / "cert.pem").is_file(), ca
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    paths = {e["event_data"].get("task_path", "") for e in events} - {""}
    assert paths and all(p.startswith(str(collections)) for p in paths), paths  # the installed build's roles
