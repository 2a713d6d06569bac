"""The control-node modules run inside Ansible's worker process (plugins/action, plugin_utils/in_process.py) when
the task runs on the control node with the controller's own Python, and give what the module itself gives.

Each test runs the same play twice on one store: once as modules (``mtls_in_process: false``, a Python process per
task, as Ansible runs any module) and once in the worker (the default). The registered results must be equal, the
in-process run must start no module process (``-vvv`` shows none), and no secret may show in either output.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / ".cache" / "collections"
MODULES = ("ca", "certificates", "crl", "verify", "probe", "report")
# a module run on the control node, at -vvv: "<localhost> EXEC /bin/sh -c '<python> && sleep 0'" (pipelining;
# ansible-core 2.21: "EXEC /bin/sh -c <python>") or the AnsiballZ file it was given
MODULE_EXEC = re.compile(r"EXEC .*(AnsiballZ_|python[0-9.]*( && sleep 0)?'?$)", re.M)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
               ANSIBLE_HOME=str(home), ANSIBLE_CONFIG=str(home / "none.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               ANSIBLE_PIPELINING="True", ANSIBLE_STDOUT_CALLBACK="default")
    return env


def _play(tmp: Path, tasks: list, in_process: bool, check: bool = False) -> tuple[dict, str]:
    """Run ``tasks`` (each registers ``r<i>``) on localhost; returns the registered results and the -vvv output."""
    out = tmp / f"results-{in_process}-{check}.json"
    names = [f"r{i}" for i in range(len(tasks))]
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable, "mtls_in_process": in_process},
             "tasks": [{**t, "register": n, "ignore_errors": True} for t, n in zip(tasks, names)] + [
                 {"name": "save", "ansible.builtin.copy": {
                     "content": "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + "} | to_json }}", "dest": str(out)},
                  "check_mode": False, "no_log": True}]}]
    path = tmp / "play.yml"
    path.write_text(json.dumps(play))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(path), "-vvv"]
                          + (["--check", "--diff"] if check else []),
                          env=_env(tmp / "home"), cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout + proc.stderr


def _comparable(result: dict) -> dict:
    """A registered result without what differs from one run to the next whatever runs it."""
    drop = {"invocation"}
    return {k: v for k, v in result.items() if k not in drop}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Secrets, a store with a CA, a server and a client certificate (made by the modules), and the tasks."""
    tmp = tmp_path_factory.mktemp("inproc")
    pki = tmp / "pki"
    s = {"ca": secrets.token_hex(12), "p12": secrets.token_hex(12)}
    tasks = [
        {"mtls.rollout.ca": {"pki_dir": str(pki), "cas": [{"name": "root", "passphrase": s["ca"]}]}},
        {"mtls.rollout.certificates": {
            "pki_dir": str(pki), "issuer": "root", "issuer_passphrase": s["ca"],
            "certificates": [{"name": "web", "dns": ["web.example.test"], "ip": ["127.0.0.1"]},
                             {"name": "alice", "common_name": "alice", "profile": "client", "pkcs12": {"password": s["p12"]}}]}},
        {"mtls.rollout.crl": {"pki_dir": str(pki), "cas": ["root"], "passphrase": s["ca"]}},
        {"mtls.rollout.verify": {"certificates": [
            {"name": "web", "certificate": f"{pki}/certs/web/fullchain.pem", "ca_file": f"{pki}/certs/web/ca.pem",
             "hostname": "web.example.test", "private_key": f"{pki}/certs/web/key.pem"},
            {"name": "wrong", "certificate": f"{pki}/certs/alice/cert.pem", "ca_file": f"{pki}/certs/web/ca.pem",
             "purpose": "server"}]}},
        {"mtls.rollout.probe": {"host": "127.0.0.1", "port": 9, "timeout": 2}},  # nothing listens: the diagnosis
        {"mtls.rollout.report": {"pki_dir": str(pki), "json_path": str(tmp / "report.json")}},
    ]
    first = _play(tmp, tasks, in_process=False)[0]  # makes the store
    assert not [r["msg"] for r in first.values() if r.get("failed")], first
    saving = _play(tmp, [], in_process=False)[1]  # the module runs of saving the results alone
    return tmp, s, tasks, len(MODULE_EXEC.findall(saving))


def _no_secret(text: str, s: dict):
    for name, value in s.items():
        assert value not in text, f"the {name} secret is in the output"


def test_in_process_results_equal_the_modules_and_start_no_module(store):
    tmp, s, tasks, saving = store
    as_modules, out_modules = _play(tmp, tasks, in_process=False)
    in_process, out_in_process = _play(tmp, tasks, in_process=True)
    assert len(MODULE_EXEC.findall(out_modules)) == saving + len(MODULES), "module runs not seen: the test proves nothing"
    assert len(MODULE_EXEC.findall(out_in_process)) == saving, "a module process was started on the control node"
    for name, module in zip(sorted(in_process), MODULES):
        assert _comparable(in_process[name]) == _comparable(as_modules[name]), module
    assert in_process["r3"]["results"][1]["valid"] is False  # the client certificate is no server certificate
    for text in (out_modules, out_in_process, json.dumps(in_process)):
        _no_secret(text, s)


def test_check_mode_and_diff_in_process_equal_the_modules(store):
    tmp, s, tasks, _saving = store
    changed = [dict(tasks[0]), {"mtls.rollout.certificates": {
        **tasks[1]["mtls.rollout.certificates"],
        "certificates": [{"name": "web", "dns": ["web.example.test", "www.example.test"], "ip": ["127.0.0.1"]}]}}]
    as_modules, out_modules = _play(tmp, changed, in_process=False, check=True)
    in_process, out_in_process = _play(tmp, changed, in_process=True, check=True)
    assert in_process["r1"]["changed"] and in_process["r1"]["certificates"][0]["reason"] == "spec_changed: dns"
    assert in_process["r1"]["diff"] == as_modules["r1"]["diff"]
    assert [_comparable(r) for r in in_process.values()] == [_comparable(r) for r in as_modules.values()]
    for text in (out_modules, out_in_process):
        _no_secret(text, s)


@pytest.mark.parametrize("task, message", [
    ({"mtls.rollout.verify": {"certificate": "/nonexistent.pem", "ca_file": "/x", "purpose": "bogus"}},
     "value of purpose must be one of: server, client, got: bogus"),
    ({"mtls.rollout.ca": {"pki_dir": "/tmp", "name": "root", "colour": "blue"}},
     "Unsupported parameters for (mtls.rollout.ca) module: colour"),
    ({"mtls.rollout.certificates": {"pki_dir": "{tmp}/pki", "issuer": "nosuchca", "certificates": [{"name": "x", "common_name": "x"}]}},
     "nosuchca"),
])
def test_a_bad_value_fails_in_process_as_the_module_does(store, task, message):
    tmp = store[0]
    task = json.loads(json.dumps(task).replace("{tmp}", str(tmp)))
    as_module = _play(tmp, [task], in_process=False)[0]
    in_process = _play(tmp, [task], in_process=True)[0]
    assert as_module["r0"]["failed"] and in_process["r0"]["failed"]
    assert message in in_process["r0"]["msg"], in_process["r0"]["msg"]
    assert in_process["r0"]["msg"] == as_module["r0"]["msg"]


@pytest.mark.parametrize("extra", [{"become": True, "become_method": "ansible.builtin.su", "become_user": "root"},
                                   {"async": 60, "poll": 1}, {"environment": {"BAO_TOKEN": "t"}}],
                         ids=["become", "async", "environment"])
def test_become_async_or_environment_runs_the_module(store, extra):
    """What the worker cannot do as the task asks (another user, in the background, with other environment
    variables: the OpenBao token may come from BAO_TOKEN) is left to the module."""
    tmp, s, tasks, saving = store
    verify = {**tasks[3], **extra}
    in_worker, out_worker = _play(tmp, [tasks[3]], in_process=True)
    as_module, out_module = _play(tmp, [verify], in_process=True)
    assert len(MODULE_EXEC.findall(out_worker)) == saving
    assert len(re.findall(r"EXEC .*(AnsiballZ_verify|async_wrapper|python[0-9.]*( && sleep 0)?'?$)", out_module,
                          re.M)) > saving
    assert as_module["r0"]["results"] == in_worker["r0"]["results"]
    _no_secret(out_module, s)
