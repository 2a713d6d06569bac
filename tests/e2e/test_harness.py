"""End-to-end tests of the test-host harness (tests/harness): real namespaces, real sshd, real Ansible.

Skipped, with the reason, when not root or when ip/unshare/sshd are missing; tests that drive Ansible
are skipped when `ansible` is not on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import Fleet, HarnessError  # noqa: E402
from tests.harness import network  # noqa: E402
from tests.harness.pytest_fixture import harness_skip_reason  # noqa: E402  (the fleet fixtures: e2e/conftest.py)

SKIP_REASON = harness_skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
needs_ansible = pytest.mark.skipif(
    shutil.which("ansible") is None, reason="`ansible` is not on PATH (activate the project venv)"
)
GROUPS = {"mtls_servers": "1-2", "mtls_clients": [2, 3]}


def _ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


@pytest.fixture(scope="module")
def ip_forward_before() -> str:
    return _ip_forward()


@pytest.fixture(scope="module")
def fleet(make_module_fleet, ip_forward_before) -> Fleet:
    """The 3-host fleet most tests share: hosts fleet-1..3, servers 1-2, clients 2-3."""
    return make_module_fleet("fleet", 3, groups=GROUPS)


@pytest.fixture(scope="module")
def ansible_env(tmp_path_factory) -> dict[str, str]:
    """Environment for ansible runs: per-host JSON results in a tree dir, no stray config."""
    base = tmp_path_factory.mktemp("ansible")
    return {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(base / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(base / "tmp"),
        "_TREE_BASE": str(base),
    }


def ansible(fleet: Fleet, env: dict[str, str], pattern: str, module: str, args: str = "") -> dict[str, dict]:
    """Run an ad-hoc ansible command over SSH; return each host's JSON result (fails on any failure)."""
    tree = Path(env["_TREE_BASE"]) / f"tree-{uuid.uuid4().hex[:8]}"
    argv = ["ansible", pattern, "-i", str(fleet.inventory), "-m", module] + (["-a", args] if args else [])
    done = subprocess.run(
        argv,
        env={**env, "ANSIBLE_CALLBACK_TREE_DIR": str(tree)},
        cwd=env["_TREE_BASE"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return {path.name: json.loads(path.read_text()) for path in tree.iterdir()}


def _banner(ip: str) -> bytes:
    with socket.create_connection((ip, 22), timeout=2) as sock:
        return sock.recv(64)


def _connect_probe(ip: str, port: int) -> str:
    """A command for a host that prints CONNECTED or the errno name of a TCP connect to ip:port."""
    return (
        'python3 -c "import socket, errno; s = socket.socket(); s.settimeout(3); '
        f"print(errno.errorcode.get(s.connect_ex(('{ip}', {port})), 'CONNECTED'))\""
    )


def _mounts_mentioning(*paths: Path) -> list[str]:
    """Mount lines of any process on the machine that mention one of the paths."""
    hits = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/mountinfo").read_text()
            except OSError:
                continue
            hits += [line for line in text.splitlines() if any(str(p) in line for p in paths)]
    return hits


def _leftovers(fleet: Fleet) -> list[str]:
    """Everything of a destroyed fleet that still exists."""
    left = [h.netns for h in fleet.hosts if network.netns_exists(h.netns)]
    left += [h.veth for h in fleet.hosts if network.link_exists(h.veth)]
    if network.link_exists(fleet.bridge):
        left.append(fleet.bridge)
    left += [str(p) for p in (fleet.state_dir, fleet.layers_root) if p.exists()]
    left += _mounts_mentioning(fleet.state_dir, fleet.layers_root)
    return left


# --- creation --------------------------------------------------------------------------------------


def test_create_three_hosts_fast_and_reachable(fleet: Fleet) -> None:
    assert fleet.timings["create"] < 2.0, f"3 hosts took {fleet.timings['create']}s to come up"
    assert [h.name for h in fleet.hosts] == ["fleet-1", "fleet-2", "fleet-3"]
    k = fleet.subnet_index
    assert [h.ip for h in fleet.hosts] == [f"10.233.{k}.2", f"10.233.{k}.3", f"10.233.{k}.4"]
    for host in fleet.hosts:
        assert _banner(host.ip).startswith(b"SSH-2.0-OpenSSH")
    for name in ("inventory.yml", "fleet.json", "id_ed25519", "id_ed25519.pub", "known_hosts"):
        assert (fleet.state_dir / name).is_file(), name
    assert fleet.private_key.stat().st_mode & 0o077 == 0
    recorded = Fleet.load(fleet.state_dir)
    assert recorded.hosts == fleet.hosts and recorded.status == "up"


@needs_ansible
def test_inventory_groups_and_connection_vars(fleet: Fleet, ansible_env) -> None:
    done = subprocess.run(
        ["ansible-inventory", "-i", str(fleet.inventory), "--list"],
        env=ansible_env,
        cwd=ansible_env["_TREE_BASE"],
        capture_output=True,
        text=True,
        check=True,
    )
    inv = json.loads(done.stdout)
    assert inv["mtls_servers"]["hosts"] == ["fleet-1", "fleet-2"]
    assert inv["mtls_clients"]["hosts"] == ["fleet-2", "fleet-3"]
    hostvars = inv["_meta"]["hostvars"]["fleet-3"]
    assert hostvars["ansible_host"] == fleet.host(3).ip
    assert hostvars["ansible_user"] == "root"
    assert hostvars["ansible_python_interpreter"] == "/usr/bin/python3"
    assert hostvars["ansible_ssh_private_key_file"] == str(fleet.private_key)
    assert f"UserKnownHostsFile={fleet.known_hosts}" in hostvars["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=no" in hostvars["ansible_ssh_common_args"]


# --- through Ansible, over SSH ---------------------------------------------------------------------


@needs_ansible
def test_ansible_sees_each_host_by_its_own_hostname(fleet: Fleet, ansible_env) -> None:
    results = ansible(fleet, ansible_env, "all", "ansible.builtin.command", "hostname")
    assert {name: r["stdout"] for name, r in results.items()} == {h.name: h.name for h in fleet.hosts}
    facts = ansible(fleet, ansible_env, "fleet-2", "ansible.builtin.setup", "filter=ansible_hostname")
    assert facts["fleet-2"]["ansible_facts"]["ansible_hostname"] == "fleet-2"


@needs_ansible
def test_host_to_host_and_host_to_control_node(fleet: Fleet, ansible_env) -> None:
    one, two = fleet.host(1), fleet.host(2)
    token = uuid.uuid4().hex
    ansible(
        fleet, ansible_env, one.name, "ansible.builtin.shell", f"mkdir -p /srv/www && echo {token} > /srv/www/token"
    )
    server = subprocess.Popen(
        fleet.ssh_argv(1, f"exec timeout 60 python3 -m http.server 8000 --bind {one.ip} --directory /srv/www"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # wait for it from the control node (a fleet address, over the bridge)
            try:
                socket.create_connection((one.ip, 8000), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server on host 1 did not come up"
                time.sleep(0.05)
        # host 2 fetches by name: /etc/hosts in each overlay lists the whole fleet
        got = ansible(
            fleet,
            ansible_env,
            two.name,
            "ansible.builtin.command",
            f"curl -sS --max-time 5 http://{one.name}:8000/token",
        )
        assert got[two.name]["stdout"] == token
    finally:
        ansible(fleet, ansible_env, one.name, "ansible.builtin.shell", "pkill -f '[h]ttp.server 8000' || true")
        server.terminate()
        server.wait(timeout=10)

    # host -> control node: a listener on the control node's bridge address answers host 3
    with socket.create_server((fleet.control_ip, 0)) as listener:
        port = listener.getsockname()[1]
        accepted: list[str] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[1][0]), daemon=True)
        thread.start()
        code = f"import socket; socket.create_connection(('{fleet.control_ip}', {port}), timeout=5).close()"
        ansible(fleet, ansible_env, fleet.host(3).name, "ansible.builtin.command", f'python3 -c "{code}"')
        thread.join(timeout=10)
    assert accepted == [fleet.host(3).ip]


@needs_ansible
def test_files_written_on_a_host_stay_on_that_host(fleet: Fleet, ansible_env) -> None:
    token = f"mtls-harness-probe-{uuid.uuid4().hex[:12]}"
    dirs = [
        "/etc",
        "/etc/ssl",
        "/var/lib",
        "/root",
        "/home",
        "/usr/local/bin",
        "/usr/share",
        "/opt",
        "/srv",
        "/tmp",
        "/run",
    ]
    written = [f"{d}/{token}" for d in dirs]
    try:
        ansible(
            fleet, ansible_env, "fleet-1", "ansible.builtin.shell", " && ".join(f"echo {token} > {p}" for p in written)
        )
        on_one = ansible(fleet, ansible_env, "fleet-1", "ansible.builtin.shell", f"cat {' '.join(written)}")
        assert on_one["fleet-1"]["stdout"].split() == [token] * len(written)
        leaked = [p for p in written if os.path.lexists(p)]
        assert leaked == [], f"written on fleet-1 but visible on the control node: {leaked}"
        others = ansible(
            fleet,
            ansible_env,
            "fleet-2:fleet-3",
            "ansible.builtin.shell",
            f"ls -d {' '.join(written)} 2>/dev/null || true",
        )
        assert {name: r["stdout"] for name, r in others.items()} == {"fleet-2": "", "fleet-3": ""}
        # what the host wrote under /etc lives in its own overlay upper dir
        assert (fleet.host(1).upper / "etc" / token).read_text().strip() == token
    finally:
        for path in written:  # only if isolation failed: do not leave probe files on the machine
            if os.path.lexists(path):
                os.unlink(path)


@needs_ansible
def test_no_default_route_nothing_leaves_the_bridge(fleet: Fleet, ansible_env, ip_forward_before) -> None:
    routes = ansible(fleet, ansible_env, "all", "ansible.builtin.command", "ip -4 route show")
    for host in fleet.hosts:
        assert routes[host.name]["stdout"].split()[:3] == [f"10.233.{fleet.subnet_index}.0/24", "dev", "eth0"]
        assert len(routes[host.name]["stdout_lines"]) == 1, routes[host.name]["stdout"]
    # 203.0.113.1 (TEST-NET-3) stands for any address off the bridge; no packet can even be sent
    out = ansible(fleet, ansible_env, "fleet-1", "ansible.builtin.command", _connect_probe("203.0.113.1", 80))
    assert out["fleet-1"]["stdout"] == "ENETUNREACH"
    assert _ip_forward() == ip_forward_before == "0"


@needs_ansible
def test_daemon_started_by_service_module_stays_in_its_host(fleet: Fleet, ansible_env) -> None:
    script = textwrap.dedent("""\
        #!/bin/sh
        PID=/run/harness-probe.pid
        case "$1" in
          start) start-stop-daemon --start --background --make-pidfile --pidfile $PID \\
                   --exec /usr/bin/python3 -- -m http.server 8081 --bind "$(hostname -I | cut -d' ' -f1)" --directory /etc ;;
          stop) start-stop-daemon --stop --pidfile $PID --retry 5 && rm -f $PID ;;
          status) start-stop-daemon --status --pidfile $PID ;;
          restart) "$0" stop; "$0" start ;;
          *) exit 2 ;;
        esac
        """)
    path = Path(ansible_env["_TREE_BASE"]) / "harness-probe"
    path.write_text(script)
    ansible(
        fleet, ansible_env, "fleet-1", "ansible.builtin.copy", f"src={path} dest=/etc/init.d/harness-probe mode=0755"
    )
    ansible(fleet, ansible_env, "fleet-1", "ansible.builtin.service", "name=harness-probe state=started")
    try:
        assert not Path("/etc/init.d/harness-probe").exists() and not Path("/run/harness-probe.pid").exists()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((fleet.host(1).ip, 8081), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "daemon on fleet-1 did not come up"
                time.sleep(0.05)
        # the daemon is a process of fleet-1's network namespace, not of the machine or of fleet-2
        pids = network.netns_pids([fleet.host(1).netns])[fleet.host(1).netns]
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in pids]
        assert any(b"http.server 8081" in c for c in cmdlines), cmdlines
        seen = ansible(
            fleet, ansible_env, "fleet-2", "ansible.builtin.shell", "ps -eo args | grep -c '[h]ttp.server 8081' || true"
        )
        assert seen["fleet-2"]["stdout"] == "0"
    finally:
        ansible(fleet, ansible_env, "fleet-1", "ansible.builtin.service", "name=harness-probe state=stopped")


@needs_ansible
def test_two_fleets_coexist_on_separate_subnets(fleet: Fleet, make_fleet, ansible_env) -> None:
    other = make_fleet("other", 1)
    assert other.subnet_index != fleet.subnet_index and other.bridge != fleet.bridge
    results = ansible(other, ansible_env, "all", "ansible.builtin.command", "hostname")
    assert results["other-1"]["stdout"] == "other-1"
    out = ansible(other, ansible_env, "other-1", "ansible.builtin.command", _connect_probe(fleet.host(1).ip, 22))
    assert out["other-1"]["stdout"] == "ENETUNREACH"  # no route between fleets


def test_subnet_in_use_is_refused_with_a_clear_error(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"in use by another fleet"):
        Fleet("clash", 1, tmp_path / "clash", subnet_index=fleet.subnet_index).create()
    assert not (tmp_path / "clash").exists()
    assert all(network.netns_exists(h.netns) for h in fleet.hosts)  # the first fleet is untouched


# --- destroy ---------------------------------------------------------------------------------------


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.harness", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert not check or done.returncode == 0, done.stderr
    return done


def test_cli_create_then_destroy_from_another_process_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "cli"
    created = _cli(
        "create",
        "--name",
        "cli",
        "--hosts",
        "3",
        "--state-dir",
        str(state),
        "--subnet-index",
        "auto",
        "--groups",
        "mtls_servers=1-3,mtls_clients=3",
    )
    summary = json.loads(created.stdout)
    assert [h["name"] for h in summary["hosts"]] == ["cli-1", "cli-2", "cli-3"]
    assert summary["groups"] == {"mtls_servers": ["cli-1", "cli-2", "cli-3"], "mtls_clients": ["cli-3"]}
    assert summary["instances"][0]["identity_file"] == str(state / "id_ed25519")
    fleet = Fleet.load(state)
    ssh = subprocess.run(fleet.ssh_argv(2, "hostname"), capture_output=True, text=True, timeout=30, check=False)
    assert ssh.stdout.strip() == "cli-2", ssh.stderr

    started = time.monotonic()
    _cli("destroy", "--state-dir", str(state))
    assert time.monotonic() - started < 5
    assert _leftovers(fleet) == []
    again = _cli("destroy", "--state-dir", str(state))  # idempotent
    assert "no fleet" in again.stderr


def test_destroy_after_the_creating_process_crashed(tmp_path: Path) -> None:
    state = tmp_path / "crashed"
    code = (
        f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); from tests.harness import create; "
        f"create('crashed', 2, {str(state)!r}, subnet_index='auto'); os.kill(os.getpid(), 9)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == -9, done.stderr
    fleet = Fleet.load(state)
    assert all(_banner(h.ip).startswith(b"SSH-") for h in fleet.hosts)  # hosts outlive their creator
    _cli("destroy", "--state-dir", str(state))
    assert _leftovers(fleet) == []


def test_destroy_after_a_partial_create(tmp_path: Path) -> None:
    fleet = Fleet("partial", 3, tmp_path / "partial", subnet_index="auto")
    with pytest.MonkeyPatch.context() as patch:  # host 3 cannot start: create must fail and clean up
        real_start = __import__("tests.harness.host", fromlist=["start"]).start

        def start(host):
            if host.index == 3:
                raise HarnessError("injected failure")
            return real_start(host)

        patch.setattr("tests.harness.host.start", start)
        with pytest.raises(HarnessError, match="injected failure"):
            fleet.create()
    assert _leftovers(fleet) == []

    # a crash in the middle of create (network up, one host started, nothing else): destroy copes
    fleet = Fleet("partial", 3, tmp_path / "partial2", subnet_index="auto")
    fleet.state_dir.mkdir()
    fleet.subnet_index = network.pick_free_subnet()
    fleet._plan()
    fleet._save()
    network.ensure_bridge(fleet.subnet_index, str(fleet.state_dir))
    network.add_hosts(fleet.subnet_index, [(h.netns, h.veth, h.ip) for h in fleet.hosts[:2]])
    _cli("destroy", "--state-dir", str(fleet.state_dir))
    assert _leftovers(fleet) == []


def test_fixture_destroys_fleets_of_a_failing_test(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""\
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.harness.pytest_fixture import make_fleet

        def test_fails(make_fleet):
            fleet = make_fleet("doomed", 2)
            open({str(record)!r}, "w").write(json.dumps([str(fleet.state_dir), [h.netns for h in fleet.hosts]]))
            assert False, "this test fails on purpose"
        """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_inner.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "this test fails on purpose" in done.stdout, done.stdout + done.stderr
    state_dir, namespaces = json.loads(record.read_text())
    assert not Path(state_dir).exists()
    assert [ns for ns in namespaces if network.netns_exists(ns)] == []
    assert _mounts_mentioning(state_dir) == []


def test_refuses_to_run_without_root() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    done = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-m",
            "tests.harness",
            "create",
            "--name",
            "x",
            "--hosts",
            "1",
            "--state-dir",
            "/tmp/mtls-harness-nonroot",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "must run as root" in done.stderr
    assert not Path("/tmp/mtls-harness-nonroot").exists()
