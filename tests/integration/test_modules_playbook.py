"""The collection as a user gets it: built, installed, and driven by a playbook through its FQCNs.

Builds the collection with ``ansible-galaxy collection build`` (from the source files git knows
about, as ``make build`` does), installs the tarball offline into a temporary collections path and,
with only that path visible to Ansible, runs a playbook on localhost that uses mtls.rollout.ca,
mtls.rollout.certificates and mtls.rollout.verify:

* the first run changes things, the second reports ``changed=0``;
* a spec change (one more DNS name) under ``--check --diff`` reports that one certificate with
  reason ``spec_changed: dns`` and writes nothing; the real run then re-issues that one only;
* no private key, passphrase or PKCS#12 password shows in the output, even at ``-vvv``;
* ``ansible-doc`` documents every module from the installed build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = ("ca", "certificates", "verify", "crl", "probe", "report", "install_files")


def _env(collections: Path, home: Path) -> dict[str, str]:
    """Ansible sees only the installed build, keeps its state in ``home`` and prints plain text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_CONFIG": str(home / "none.cfg"),  # no ansible.cfg from the working directory
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.pop("PYTHONPATH", None)
    return env


def _run(argv, env, cwd, timeout=600):
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The collection built from this checkout and installed: .collections, .env, .tarball."""
    base = tmp_path_factory.mktemp("collection")
    stage = base / "stage" / "ansible_collections" / "mtls" / "rollout"
    subprocess.run([str(ROOT / ".ci" / "stage-collection"), str(stage)], check=True, capture_output=True)
    dist, collections, home = base / "dist", base / "installed", base / "ansible-home"
    for path in (dist, collections, home / "tmp"):
        path.mkdir(parents=True)
    env = _env(collections, home)

    rc, out = _run(["ansible-galaxy", "collection", "build", "--output-path", str(dist), str(stage)], env, base)
    assert rc == 0, out
    tarballs = list(dist.glob("mtls-rollout-*.tar.gz"))
    assert len(tarballs) == 1, out
    rc, out = _run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "-p", str(collections),
                    str(tarballs[0])], env, base)
    assert rc == 0, out
    assert (collections / "ansible_collections" / "mtls" / "rollout" / "MANIFEST.json").is_file(), out
    return SimpleNamespace(collections=collections, env=env, tarball=tarballs[0])


def test_tarball_ships_no_secrets_or_caches(installed):
    tarball = installed.tarball
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    for module in MODULES:
        assert f"plugins/modules/{module}.py" in names
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "check_tarball.py"), str(tarball)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_from_installed_build(installed, module, tmp_path):
    env = installed.env
    rc, out = _run(["ansible-doc", f"mtls.rollout.{module}"], env, tmp_path)
    assert rc == 0, out
    assert f"mtls.rollout.{module}" in out.lower()
    assert "OPTIONS" in out and "EXAMPLES" in out and "RETURN VALUES" in out, out
    assert "ERROR" not in out and "WARNING" not in out, out


PLAYBOOK = """\
- name: mtls.rollout modules from the installed build
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    pki: __PKI__
    server_dns: ["*.svc.test.example", "svc.test.example"]
    extra_dns: []
  tasks:
    - name: Root CA
      mtls.rollout.ca:
        name: root
        pki_dir: "{{ pki }}"
        subject: {common_name: Integration Root CA, organization: mtls.rollout tests, country: DE}
        valid_days: 30

    - name: Intermediate CA with an encrypted key
      mtls.rollout.ca:
        name: issuing
        issuer: root
        pki_dir: "{{ pki }}"
        subject: {common_name: Integration Issuing CA}
        path_length: 0
        passphrase: "{{ ca_passphrase }}"
        valid_days: 20

    - name: Server certificate, wildcard and IP in the SAN
      mtls.rollout.certificates:
        pki_dir: "{{ pki }}"
        issuer: issuing
        issuer_passphrase: "{{ ca_passphrase }}"
        certificates:
          - name: web
            profile: server
            common_name: svc.test.example
            dns: "{{ server_dns + extra_dns }}"
            ip: [127.0.0.1, "::1"]
            valid_days: 10
      register: servers

    - name: Client certificates with PKCS#12 bundles
      mtls.rollout.certificates:
        pki_dir: "{{ pki }}"
        issuer: issuing
        issuer_passphrase: "{{ ca_passphrase }}"
        defaults:
          profile: client
          organization: mtls.rollout tests
          valid_days: 10
          pkcs12: {password: "{{ p12_password }}", encryption: modern}
        certificates:
          - {name: alice, common_name: alice}
          - {name: bob, common_name: bob, pkcs12: {password: "{{ p12_password_compat }}", encryption: compat}}
          - {name: carol, common_name: carol, email: [carol@test.example]}
      register: clients

    - name: The server certificate verifies for a name under the wildcard, by IP, with its key
      mtls.rollout.verify:
        certificate: "{{ pki }}/certs/web/cert.pem"
        intermediates: "{{ pki }}/certs/web/chain.pem"
        ca_file: "{{ pki }}/certs/web/ca.pem"
        purpose: server
        hostname: api.svc.test.example
        ip: 127.0.0.1
        private_key: "{{ pki }}/certs/web/key.pem"
        min_days_remaining: 5
        fail_on_invalid: true
      register: server_check
      check_mode: false

    - name: A client certificate verifies for client use
      mtls.rollout.verify:
        certificate: "{{ pki }}/certs/alice/cert.pem"
        intermediates: "{{ pki }}/certs/alice/chain.pem"
        ca_file: "{{ pki }}/certs/alice/ca.pem"
        purpose: client
        private_key: "{{ pki }}/certs/alice/key.pem"
        fail_on_invalid: true
      register: client_check
      check_mode: false

    - name: A client certificate is not good for a server
      mtls.rollout.verify:
        certificate: "{{ pki }}/certs/alice/cert.pem"
        intermediates: "{{ pki }}/certs/alice/chain.pem"
        ca_file: "{{ pki }}/certs/alice/ca.pem"
        purpose: server
        hostname: alice
      register: wrong_purpose
      check_mode: false

    - name: Hand the results to the test
      ansible.builtin.copy:
        dest: __RESULTS__
        content: "{{ {'servers': servers, 'clients': clients, 'server_check': server_check,
                      'client_check': client_check, 'wrong_purpose': wrong_purpose} | to_nice_json }}"
        mode: "0600"
      check_mode: false
      changed_when: false
      diff: false
"""


def _recap(output):
    """PLAY RECAP counters of localhost."""
    match = re.search(r"^localhost\s+:\s+(ok=.*)$", output, re.M)
    assert match, f"no PLAY RECAP for localhost in:\n{output[-4000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _snapshot(root: Path):
    """Every file under ``root`` with its size, mtime and a digest of its content."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns,
                                                  hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _by_name(result):
    return {c["name"]: c for c in result["certificates"]}


def test_playbook_idempotent_check_diff_reissue_and_no_secrets(installed, tmp_path):
    # ansible-core 2.21 leaves the module arguments (`invocation`) out of results unless asked; ask, so that
    # -vvv prints them (no_log ones masked) and the secrets check below sees what a user would see there
    env = {**installed.env, "ANSIBLE_INJECT_INVOCATION": "True"}
    pki, results = tmp_path / "pki", tmp_path / "results.json"
    secrets_used = {
        "ca_passphrase": "ca-" + secrets.token_hex(12),
        "p12_password": "p12-" + secrets.token_hex(12),
        "p12_password_compat": "p12c-" + secrets.token_hex(12),
    }
    (tmp_path / "site.yml").write_text(PLAYBOOK.replace("__PKI__", str(pki)).replace("__RESULTS__", str(results)))
    (tmp_path / "secrets.json").write_text(json.dumps(secrets_used))
    (tmp_path / "hosts.ini").write_text("localhost\n")
    outputs = []

    def play(*args, extra=None):
        argv = ["ansible-playbook", "-i", "hosts.ini", "site.yml", "-e", "@secrets.json"]
        if extra:
            argv += ["-e", json.dumps(extra)]
        rc, out = _run(argv + list(args), env, tmp_path)
        outputs.append((" ".join(args) or "(plain)", out))
        assert rc == 0, f"ansible-playbook {' '.join(args)} failed ({rc}):\n{out[-6000:]}"
        return out, json.loads(results.read_text())

    # 1. first run: everything is created (at -vvv, for the secrets check below)
    out, res = play("-vvv")
    assert _recap(out)["changed"] > 0
    assert _by_name(res["servers"])["web"]["action"] == "issued"
    assert {n: c["action"] for n, c in _by_name(res["clients"]).items()} == dict.fromkeys(
        ("alice", "bob", "carol"), "issued")
    assert res["server_check"]["valid"] and res["client_check"]["valid"]
    assert res["server_check"]["depth"] == 1 and len(res["server_check"]["chain"]) == 3
    assert not res["wrong_purpose"]["valid"] and res["wrong_purpose"]["problems"]
    for name in ("alice", "bob", "carol"):
        assert (pki / "certs" / name / "bundle.p12").is_file()
    assert b"ENCRYPTED PRIVATE KEY" in (pki / "ca" / "issuing" / "key.pem").read_bytes()

    # 2. second run: nothing to do
    out, res = play()
    assert _recap(out)["changed"] == 0, out
    assert all(c["action"] == "unchanged" for c in res["servers"]["certificates"] + res["clients"]["certificates"])

    # 3. one more DNS name, --check --diff: reported with its reason, nothing written
    before = _snapshot(pki)
    extra = {"extra_dns": ["new.test.example"]}
    out, res = play("--check", "--diff", extra=extra)
    assert _recap(out)["changed"] == 1, out
    web = _by_name(res["servers"])["web"]
    assert web["changed"] and web["reason"] == "spec_changed: dns", web
    assert all(c["action"] == "unchanged" for c in res["clients"]["certificates"])
    assert re.search(r"^--- before: web$", out, re.M) and re.search(r"^\+\+\+ after: web$", out, re.M), out
    assert _snapshot(pki) == before, "check mode wrote to the store"

    # 4. the real run re-issues that certificate only (at -vvv, for the secrets check below)
    out, res = play("-vvv", extra=extra)
    assert _recap(out)["changed"] == 1, out
    web = _by_name(res["servers"])["web"]
    assert web["action"] == "renewed" and web["reason"] == "spec_changed: dns", web
    assert all(c["action"] == "unchanged" for c in res["clients"]["certificates"])
    after = _snapshot(pki)
    touched = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert touched, "the re-issue wrote nothing"
    # verified.json: the record of web's new verdict (a cache, see README "The store")
    assert {p for p in touched if not p.startswith("certs/web/")} <= {"index.json", ".lock", "verified.json"}, touched
    assert "certs/web/cert.pem" in touched

    # 5. and then it is idempotent again
    out = play(extra=extra)[0]
    assert _recap(out)["changed"] == 0, out

    # no key material, passphrase or password in any output, -vvv included (where the module
    # arguments are printed, so the secrets are there to leak unless masked)
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in outputs[0][1], "-vvv did not show the module arguments"
    for args, out in outputs:
        assert "PRIVATE KEY" not in out, f"private key material in the output of ansible-playbook {args}"
        for name, value in secrets_used.items():
            assert value not in out, f"{name} shows in the output of ansible-playbook {args}"
