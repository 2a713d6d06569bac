"""The modules as Ansible runs them, under faults and hostile eyes (checkout linked under .cache/collections):

* what every module logs to the system journal at start-up holds no secret, nested ones included (a
  stand-in ``systemd.journal`` on PYTHONPATH captures it);
* kill -9 of a real ``mtls.rollout.certificates`` run: no bundle worker outlives it, no key stays behind
  after the next run, and no run that ends normally leaves a payload directory in the temp dir;
* report.yml takes ``mtls_pki_dir`` and ``mtls_report_*`` from the inventory, and ``-e`` beats those.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / ".cache" / "collections"
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_ca import ensure_ca  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store  # noqa: E402

MODULES = ("ca", "certificates", "crl", "verify", "probe", "install_files")
FAKE_JOURNAL = {
    "systemd/__init__.py": "",
    "systemd/daemon.py": "def booted():\n    return True\n",
    "systemd/journal.py": (
        "import json, os\n\n\n"
        "def send(MESSAGE, **fields):\n"
        "    with open(os.environ['FAKE_JOURNAL_FILE'], 'a') as f:\n"
        "        f.write(json.dumps({'MESSAGE': MESSAGE, **{k: str(v) for k, v in fields.items()}}) + '\\n')\n\n\n"
        "def sendv(*lines):\n"
        "    send(' '.join(lines))\n"),
}


def _env(tmp_path: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    home = tmp_path / "ansible-home"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_CONFIG": str(home / "none.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _playbook(tmp_path: Path, tasks: list, name="play.yml", in_process=True) -> Path:
    play = [{"name": "test", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}", "mtls_in_process": in_process},
             "tasks": tasks}]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


def _ansible_playbook(argv, env, cwd, timeout=600):
    return subprocess.run(["ansible-playbook", *argv], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


# --- secrets in the system log ---------------------------------------------------------------------

@pytest.mark.parametrize("in_process", [False, True], ids=["modules", "in-process"])
def test_no_secret_reaches_the_system_log_at_module_start_up(tmp_path, in_process):
    fake = tmp_path / "fake-journal"
    for rel, text in FAKE_JOURNAL.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    journal = tmp_path / "journal.jsonl"
    s = {k: f"{k}-{secrets.token_hex(8)}" for k in (
        "ca_pass", "item_p12", "default_p12", "crl_pass", "verify_pass", "probe_pass", "file_content")}
    pki = str(tmp_path / "pki")
    tasks = [
        {"name": "root", "mtls.rollout.ca": {"name": "root", "pki_dir": pki, "passphrase": s["ca_pass"]}},
        {"name": "int", "mtls.rollout.ca": {"name": "int", "issuer": "root", "pki_dir": pki,
                                            "issuer_passphrase": s["ca_pass"]}},
        {"name": "leaves", "mtls.rollout.certificates": {
            "pki_dir": pki, "issuer": "root", "issuer_passphrase": s["ca_pass"],
            "defaults": {"profile": "client", "pkcs12": {"password": s["default_p12"], "encryption": "compat"}},
            "certificates": [{"name": "alice", "common_name": "alice"},
                             {"name": "bob", "common_name": "bob", "pkcs12": {"password": s["item_p12"]}}]}},
        {"name": "crl", "mtls.rollout.crl": {"pki_dir": pki, "cas": ["root"], "passphrase": s["crl_pass"],
                                             "passphrases": {"root": s["ca_pass"]}}, "ignore_errors": True},
        {"name": "verify", "mtls.rollout.verify": {"certificate": f"{pki}/certs/alice/cert.pem",
                                                   "ca_file": f"{pki}/certs/alice/ca.pem",
                                                   "private_key": f"{pki}/certs/alice/key.pem",
                                                   "private_key_passphrase": s["verify_pass"]},
         "ignore_errors": True},
        {"name": "probe", "mtls.rollout.probe": {"host": "127.0.0.1", "port": 9, "timeout": 1,
                                                 "client_cert": f"{pki}/certs/alice/cert.pem",
                                                 "client_key": f"{pki}/certs/alice/key.pem",
                                                 "client_key_passphrase": s["probe_pass"]}, "ignore_errors": True},
        {"name": "files", "mtls.rollout.install_files": {
            "files": [{"path": str(tmp_path / "out" / "key.pem"), "content": s["file_content"], "mode": "0600",
                       "secret": True}]}, "ignore_errors": True},
    ]
    play = _playbook(tmp_path, tasks, in_process=in_process)
    env = _env(tmp_path, PYTHONPATH=str(fake), FAKE_JOURNAL_FILE=str(journal))
    proc = _ansible_playbook(["-i", "localhost,", str(play)], env, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    logged = {r["MESSAGE"].split()[0] for r in records if "Invoked with" in r["MESSAGE"]}
    # in the controller's worker (plugins/action) a control-node module is no AnsibleModule and logs nothing;
    # install_files runs as a module either way
    in_worker = ("ca", "certificates", "crl", "verify", "probe") if in_process else ()
    assert logged == {f"ansible-mtls.rollout.{m}" for m in MODULES if m not in in_worker}, logged
    text = journal.read_text()
    assert in_process or "NOT_LOGGING_PARAMETER" in text or "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in text
    for name, value in s.items():
        assert value not in text, f"{name} reached the system log: " + next(
            r["MESSAGE"] for r in records if value in json.dumps(r))


# --- kill -9 of a real module run -------------------------------------------------------------------

def _processes(marker: str) -> dict[int, int]:
    """pid -> parent pid of the Python processes running ``marker`` (not the shell that started them)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if (b"python" in os.path.basename(argv[0]) and any(marker.encode() in a for a in argv[1:2])
                and stat.split(") ")[1].split()[0] != "Z"):
            found[int(pid)] = int(stat.split(") ")[1].split()[1])
    return found


def _temp_files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _dirs, fs in os.walk(root) for f in fs if ".tmp-" in f]


@pytest.mark.parametrize("in_process", [False, True], ids=["module", "in-process"])
def test_kill_9_of_a_certificates_run(tmp_path, in_process):
    """kill -9 of the process that runs the engine: the module's Python, or Ansible's worker (in_process)."""
    pki = str(tmp_path / "pki")
    ensure_ca(Store(pki), specs.ca_spec("root"))
    people = [{"name": f"u{i}", "common_name": f"u{i}"} for i in range(400)]
    task = {"name": "people", "mtls.rollout.certificates": {
        "pki_dir": pki, "issuer": "root",
        "defaults": {"profile": "client", "pkcs12": {"password": "pw"}}, "certificates": people}}
    play = _playbook(tmp_path, [task], in_process=in_process)
    tmp = tmp_path / "tmpdir"  # the modules' temp dir (payload directories)
    tmp.mkdir()
    env = _env(tmp_path, TMPDIR=str(tmp))
    marker = "ansible-playbook" if in_process else "AnsiballZ_certificates.py"
    run = subprocess.Popen(["ansible-playbook", "-i", "localhost,", str(play)], env=env, cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    survivors = {}
    try:
        deadline = time.monotonic() + 300
        while not _temp_files(pki):  # the commit is under way: temp files, keys among them, are written
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.005)
        procs = {p: pp for p, pp in _processes(marker).items() if _processes_tmp(p, tmp) and p != run.pid}
        # the module's Python (its parent is a shell), or the worker Ansible forked to run the task
        module = [p for p, pp in procs.items() if pp == run.pid or (not in_process and pp not in procs)]
        assert len(module) == 1, procs
        workers = [p for p in procs if p != module[0]]
        os.kill(module[0], signal.SIGKILL)
        run.wait(120)
        time.sleep(1)
        survivors = {p: pp for p, pp in _processes(marker).items() if _processes_tmp(p, tmp)}
        assert not survivors, f"bundle workers outlived the killed module ({len(workers)} were running)"
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert _temp_files(pki), "the kill came too late to leave temp files"
    payloads_after_kill = set(os.listdir(tmp))

    proc = _ansible_playbook(["-i", "localhost,", str(play)], env, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not _temp_files(pki), "the next run left the killed run's temp files (keys) behind"
    assert set(os.listdir(tmp)) == payloads_after_kill, "a run that ended normally left its payload directory"
    store = Store(pki)
    index = store.load_index()
    assert sorted(r["name"] for r in index.records if r["kind"] == "leaf") == sorted(p["name"] for p in people)
    again = ensure_leaves(store, "root", [specs.leaf_spec(p, {"profile": "client", "pkcs12": {"password": "pw"}})
                                          for p in people])
    assert {r["action"] for r in again} == {"unchanged"}


def _processes_tmp(pid: int, tmp: Path) -> bool:
    """Whether the process runs with TMPDIR=tmp (one of this test's, not another test's)."""
    try:
        return f"TMPDIR={tmp}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


# --- playbook variables from the inventory ---------------------------------------------------------

def test_playbooks_set_no_inventory_variable_as_play_vars():
    """Play vars beat the inventory: a playbook may only default mtls_* variables (| default())."""
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()):
            shadowing = [k for k in (play.get("vars") or {}) if k.startswith("mtls_")]
            assert not shadowing, f"{path.name}, play {play.get('name')!r}: play vars {shadowing} override the inventory"


def test_report_playbook_takes_its_settings_from_the_inventory(tmp_path):
    pki = str(tmp_path / "pki")
    store = Store(pki)
    ensure_ca(store, specs.ca_spec("root"))
    ensure_leaves(store, "root", [specs.leaf_spec({"name": "soon", "dns": "soon.example.com", "valid_days": 3})])
    reports = tmp_path / "reports"
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}},
                         "vars": {"mtls_pki_dir": pki, "mtls_report_fail_days": 5, "mtls_report_warn_days": 10,
                                  "mtls_report_dir": str(reports)}}}
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(inventory))
    env = _env(tmp_path)
    proc = _ansible_playbook(["-i", "inv.yml", "mtls.rollout.report"], env, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]  # the monitoring check fails: 'soon' expires within 5 days
    assert "soon" in out and "expire within 5 days" in out, out[-4000:]
    assert json.loads((reports / "expiry.json").read_text())
    proc = _ansible_playbook(["-i", "inv.yml", "mtls.rollout.report", "-e", "mtls_report_fail_days=1"], env, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]  # -e beats the inventory
