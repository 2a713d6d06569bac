"""mtls.rollout.ca with ``cas``: a whole CA hierarchy in one module run, as Ansible runs it (checkout linked
under .cache/collections), with the local backend and a real OpenBao dev server.

Failure modes named and tested:
* a CA's key encrypted with the wrong passphrase, or an intermediate signed without its issuer's (list) passphrase;
* a second run that changes something, or a check run that writes;
* an error in the middle of the list: the CAs before it lost from the result, the ones after it half-made;
* per-CA options at the top level silently ignored next to ``cas``;
* a passphrase in the output at -vvv;
* the OpenBao backend not reached through the list (one backend for all CAs).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.test_module_faults import _env
from tests.openbao_server import DevServer

BIN = Path(sys.executable).parent


def _run(tmp_path, ca_args, *argv, name="play.yml"):
    """One mtls.rollout.ca task with ``ca_args``; (returncode, its registered result, the whole output)."""
    out = tmp_path / f"{name}.json"
    play = [{"name": "ca", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
             "tasks": [{"name": "CAs", "mtls.rollout.ca": ca_args, "register": "r", "ignore_errors": True},
                       {"name": "Hand the result over", "ansible.builtin.copy": {"content": "{{ r | to_json }}",
                                                                                 "dest": str(out)},
                        "check_mode": False}]}]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(path), *argv], env=_env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout + proc.stderr


def _hierarchy(pki, root_pass):
    return {"pki_dir": str(pki), "passphrase": "shared-" + root_pass, "cas": [
        {"name": "root", "subject": {"common_name": "List Root"}, "passphrase": root_pass, "valid_days": 30},
        {"name": "servers", "issuer": "root", "path_length": 0, "valid_days": 20},
        {"name": "clients", "issuer": "root", "key_type": "rsa", "key_size": 2048, "valid_days": 20,
         "cross_signed_by": ["servers"]}]}


def _key(pki, name, passphrase):
    return serialization.load_pem_private_key((pki / "ca" / name / "key.pem").read_bytes(), passphrase.encode())


def _cert(pki, name, file="cert.pem"):
    return x509.load_pem_x509_certificate((pki / "ca" / name / file).read_bytes())


def test_a_hierarchy_in_one_run_check_first_then_idempotent_and_no_passphrase_shown(tmp_path):
    pki, root_pass = tmp_path / "pki", secrets.token_hex(12)
    args = _hierarchy(pki, root_pass)

    r, out = _run(tmp_path, args, "--check", "--diff", name="check.yml")
    assert r["changed"] and [c["action"] for c in r["cas"]] == ["issued"] * 3, r
    assert not (pki / "ca").exists(), "a check run wrote the store"

    r, out = _run(tmp_path, args, "--diff", "-vvv")
    assert not r.get("failed"), r
    assert [(c["name"], c["action"], c["issuer_ca"]) for c in r["cas"]] == [
        ("root", "issued", None), ("servers", "issued", "root"), ("clients", "issued", "root")]
    assert [c["signer"] for c in r["cas"][2]["cross"]] == ["servers"]
    assert "name" not in r and "action" not in r, "per-CA keys at the top level with cas"
    assert root_pass not in out and "shared-" + root_pass not in out
    # each key under its own passphrase (the item's, else the shared one); each signed by its issuer's key
    root_key, servers_key = _key(pki, "root", root_pass), _key(pki, "servers", "shared-" + root_pass)
    _key(pki, "clients", "shared-" + root_pass)
    for name in ("servers", "clients"):
        _cert(pki, name).verify_directly_issued_by(_cert(pki, "root"))
    assert _cert(pki, "root").public_key() == root_key.public_key()
    _cert(pki, "clients", "cross-servers.pem").verify_directly_issued_by(_cert(pki, "servers"))
    assert _cert(pki, "servers").public_key() == servers_key.public_key()

    r = _run(tmp_path, args, name="again.yml")[0]
    assert not r["changed"] and [c["action"] for c in r["cas"]] == ["unchanged"] * 3, r


def test_a_failing_ca_stops_the_list_and_names_it_keeping_the_results_before(tmp_path):
    pki = tmp_path / "pki"
    args = {"pki_dir": str(pki), "cas": [{"name": "root"}, {"name": "int", "issuer": "nowhere"}, {"name": "after"}]}
    r = _run(tmp_path, args)[0]
    assert r["failed"] and "CA int:" in r["msg"] and "nowhere" in r["msg"], r
    assert [c["name"] for c in r["cas"]] == ["root"] and r["cas"][0]["action"] == "issued", r
    assert (pki / "ca" / "root" / "cert.pem").is_file()
    assert not (pki / "ca" / "int").exists() and not (pki / "ca" / "after").exists()


def test_per_ca_options_at_the_top_level_are_refused_next_to_cas(tmp_path):
    r = _run(tmp_path, {"pki_dir": str(tmp_path / "pki"), "issuer": "root", "cas": [{"name": "int"}]})[0]
    assert r["failed"] and "mutually exclusive" in r["msg"] and "issuer" in r["msg"], r
    r = _run(tmp_path, {"pki_dir": str(tmp_path / "pki")}, name="neither.yml")[0]
    assert r["failed"] and "one of the following is required: name, cas" in r["msg"], r
    assert not (tmp_path / "pki" / "ca").exists()


def test_openbao_backend_makes_the_list_as_mounts_once(tmp_path):
    with DevServer() as bao:
        args = {"pki_dir": str(tmp_path / "pki"), "backend": "openbao",
                "openbao": {"addr": bao.addr, "token": bao.token, "mount_prefix": "list-"},
                "cas": [{"name": "top", "subject": {"common_name": "Bao Root"}},
                        {"name": "mid", "issuer": "top", "path_length": 0}]}
        r = _run(tmp_path, args, "-v")[0]  # the CA names are not "root": the dev token is
        assert not r.get("failed"), r
        assert [(c["name"], c["action"]) for c in r["cas"]] == [("top", "issued"), ("mid", "issued")], r
        _cert(tmp_path / "pki", "mid").verify_directly_issued_by(_cert(tmp_path / "pki", "top"))
        r = _run(tmp_path, args, name="again.yml")[0]
        assert not r["changed"] and [c["action"] for c in r["cas"]] == ["unchanged"] * 2, r
