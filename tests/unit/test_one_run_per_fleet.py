"""Issue 16: the modules that let a fleet run cost about one module run per host.

install_files ``requires``: a missing command means nothing written and a report (the play installs it then);
verify ``certificates`` and probe ``targets``: one run on the control node for every server of a play, each
item judged on its own. The modules run as Ansible runs them: their file executed with the arguments as JSON.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from pkitest import issue, make_ca

MODULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "plugins", "modules")


def run_module(tmp_path, name, check=False, **args):
    path = tmp_path / f"args-{name}.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, os.path.join(MODULES, f"{name}.py"), str(path)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("check", [False, True])
def test_missing_required_command_writes_nothing_and_says_which(tmp_path, check):
    target = tmp_path / "etc" / "site.conf"
    result = run_module(tmp_path, "install_files", check=check, requires=["sh", "mtls-no-such-command"],
                        files=[{"path": str(target), "content": "x\n"}], validate="mtls-no-such-command -t")
    assert not result.get("failed"), result
    assert result["missing"] == ["mtls-no-such-command"]
    assert not target.exists()
    # a real run changes nothing (the play installs the command, then runs again); check mode tells what would change
    assert result["changed_files"] == ([str(target)] if check else [])
    assert result["changed"] is check


def test_present_required_command_installs_as_before(tmp_path):
    target = tmp_path / "site.conf"
    result = run_module(tmp_path, "install_files", requires=["sh"], files=[{"path": str(target), "content": "x\n"}],
                        validate="sh -c true")
    assert (result["changed"], result["missing"], result["service_started"]) == (True, [], False)
    assert target.read_text() == "x\n"
    again = run_module(tmp_path, "install_files", requires=["sh"], files=[{"path": str(target), "content": "x\n"}])
    assert (again["changed"], again["changed_files"]) == (False, [])


def test_verify_checks_every_item_in_one_run(tmp_path, store):
    make_ca(store, "root")
    make_ca(store, "server-ca", "root")
    issue(store, "server-ca", [{"name": f"web{i}", "dns": [f"web{i}.example.com"]} for i in (1, 2)])
    leaf = store.leaf_path

    def item(cert, host, **kw):
        return {"name": cert, "certificate": f"{leaf(cert)}/fullchain.pem", "ca_file": f"{leaf(cert)}/ca.pem",
                "private_key": f"{leaf(cert)}/key.pem", "hostname": host, **kw}
    result = run_module(tmp_path, "verify", certificates=[
        item("web1", "web1.example.com"),
        item("web2", "web1.example.com"),  # the wrong name
        {**item("web3", "web3.example.com"), "certificate": str(tmp_path / "absent.pem")},
        item("web1", "web1.example.com", private_key=f"{leaf('web2')}/key.pem", name="web1-other-key")])
    assert not result.get("failed"), result
    by_name = {r["name"]: r for r in result["results"]}
    assert [r["name"] for r in result["results"]] == ["web1", "web2", "web3", "web1-other-key"]
    assert by_name["web1"]["valid"] and by_name["web1"]["problems"] == []
    assert not by_name["web2"]["valid"] and "web1.example.com" in by_name["web2"]["problems"][0]["message"]
    assert [p["code"] for p in by_name["web3"]["problems"]] == ["unreadable"]
    assert not by_name["web1-other-key"]["valid"]
    failing = run_module(tmp_path, "verify", fail_on_invalid=True, certificates=[item("web2", "web1.example.com")])
    assert failing["failed"] and failing["msg"].startswith("certificates not valid: web2: ")


def test_verify_one_certificate_still_needs_trust_anchors(tmp_path):
    result = run_module(tmp_path, "verify", certificate=str(tmp_path / "cert.pem"))
    assert result["failed"] and "ca_file, ca_content" in result["msg"]


def test_probe_reports_each_target_and_an_unreachable_one_does_not_stop_the_others(tmp_path):
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()  # accepts TCP, never speaks TLS: a handshake error
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
        result = run_module(tmp_path, "probe", http=False, timeout=2, targets=[
            {"name": "silent", "host": "127.0.0.1", "port": listening.getsockname()[1]},
            {"name": "refused", "host": "127.0.0.1", "port": closed.getsockname()[1]}])
    assert not result.get("failed"), result
    assert [r["name"] for r in result["results"]] == ["silent", "refused"]
    assert all(not r["ok"] and r["error"] for r in result["results"])
    assert result["results"][1]["reachable"] is False
