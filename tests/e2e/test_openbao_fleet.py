"""Issue 12 end to end: OpenBao as the CA (mtls_ca_backend openbao), keys made on the hosts, no control-node state.

A real OpenBao server (raft storage, TLS on 127.0.0.1) holds every CA and the issuance record. Fleet: two nginx
servers and one client host, all with mtls_key_location host. The control node's mtls_pki_dir starts absent and is
wiped before renew.yml, revoke.yml, report.yml and a third site.yml: it is a cache only. The token is passed as an
inventory variable and must never appear in any -vvv output.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from cryptography import x509

from tests.e2e.helpers import ROOT, ansible_env, changed_tasks, curl, recap, run_playbook
from tests.openbao_server import RaftCluster

SITE, RENEW, REVOKE, REPORT, VERIFY = (f"mtls.rollout.{p}" for p in ("site", "renew", "revoke", "report", "verify"))
SERVERS, CLIENT = [1, 2], 3
CLIENT_KEY = "/etc/mtls/client/key.pem"
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def bao():
    with RaftCluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    return make_module_fleet("ob", hosts=3, groups={"mtls_servers": SERVERS, "mtls_clients": [CLIENT]})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "pki"
    assert not path.exists()
    return path


@pytest.fixture(scope="module")
def inv(fleet, bao, tmp_path_factory):
    with open(fleet.inventory) as f:
        data = yaml.safe_load(f)
    data["all"].setdefault("vars", {}).update({
        "mtls_key_location": "host", "mtls_nginx_crl": True, "mtls_ca_backend": "openbao",
        "mtls_openbao_addr": bao.addrs, "mtls_openbao_ca_cert": bao.ca_cert, "mtls_openbao_token": bao.token})
    path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def site_vars(pki):
    return {"mtls_pki_dir": str(pki), "mtls_nginx_install": False, "mtls_client_pkcs12_password": "p12 pw",
            "mtls_client_identities": [{"name": "client1"}]}


@pytest.fixture(scope="module")
def outputs():
    return []


def run(playbook, inv, extra, outputs, *args, check=True):
    rc, out = run_playbook(playbook, inv, extra, "-vvv", *args, check=check)
    outputs.append(out)
    return rc, out


def wipe(pki):
    shutil.rmtree(pki, ignore_errors=True)


def bao_get(bao, path):
    """(status, body bytes) of an authenticated GET to OpenBao."""
    req = urllib.request.Request(f"{bao.addrs[0]}/v1/{path}", headers={"X-Vault-Token": bao.token})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=bao.ca_cert), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def bao_root(bao, tmp_path_factory):
    """OpenBao's root CA certificate, fetched from OpenBao itself (not from the cache)."""
    def fetch():
        status, body = bao_get(bao, "root/ca/pem")
        assert status == 200, body
        path = tmp_path_factory.mktemp("root") / "root.pem"
        path.write_bytes(body)
        return str(path)
    return fetch


@pytest.fixture(scope="module")
def first(fleet, inv, site_vars, outputs):
    return run(SITE, inv, site_vars, outputs)[1]


def on_client(fleet, command):
    return subprocess.run(fleet.ssh_argv(CLIENT, command), capture_output=True, check=False, text=True, timeout=60)


def client_status(fleet, ip):
    proc = on_client(fleet, f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert /etc/mtls/client/ca.pem "
                            f"--cert /etc/mtls/client/cert.pem --key {CLIENT_KEY} https://{ip}/")
    return proc.stdout


def served_serial(ip):
    out = subprocess.run(f"openssl s_client -connect {ip}:443 </dev/null 2>/dev/null | openssl x509 -noout -serial",
                         shell=True, capture_output=True, check=False, text=True, timeout=30).stdout
    return out.strip().split("=")[-1].lower().lstrip("0")


def colons(serial):
    serial = "0" * (len(serial) % 2) + serial
    return ":".join(serial[i:i + 2] for i in range(0, len(serial), 2))


def test_site_from_an_absent_store_serves_mtls_with_cas_in_openbao(first, fleet, pki, bao_root):
    counts = recap(first)
    assert all(counts[fleet.host(i).name]["failed"] == 0 for i in SERVERS + [CLIENT])
    assert not any(f == "key.pem" for _d, _s, files in os.walk(pki / "ca") for f in files), "a CA key in the cache"
    root = bao_root()
    for i in SERVERS:
        ip = fleet.host(i).ip
        assert client_status(fleet, ip) == "200"
        status, body = curl(f"https://{ip}/", cacert=root, cert=f"{pki}/certs/client1/cert.pem",
                            key=f"{pki}/certs/client1/key.pem")  # a controller-key identity, signed from a CSR
        assert status == 200 and json.loads(body)["client_verify"] == "SUCCESS", body
        status, body = curl(f"https://{ip}/", cacert=root)
        assert status == 400 and "No required SSL certificate was sent" in body
        proc = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:443", "-CAfile", root, "-verify_ip", ip,
                               "-verify_return_error"], input="", capture_output=True, check=False, text=True, timeout=30)
        assert proc.returncode == 0 and "Verify return code: 0 (ok)" in proc.stdout, proc.stdout[-1500:]


def test_second_run_changes_nothing_and_a_wiped_cache_changes_no_host(first, fleet, inv, site_vars, pki, outputs,
                                                                      bao):
    issued = len(json.loads(bao_get(bao, "server-ca/certs?list=true")[1])["data"]["keys"])
    out = run(SITE, inv, site_vars, outputs)[1]
    for host, counts in recap(out).items():
        assert counts["changed"] == 0, f"{host} changed on a second run: {changed_tasks(out, host)}"
    wipe(pki)
    out = run(SITE, inv, site_vars, outputs)[1]
    for i in SERVERS + [CLIENT]:
        host = fleet.host(i).name
        assert recap(out)[host]["changed"] == 0, f"{host} changed after the cache was wiped: {changed_tasks(out, host)}"
    assert len(json.loads(bao_get(bao, "server-ca/certs?list=true")[1])["data"]["keys"]) == issued, "signed again"


def test_renew_from_a_wiped_cache_serves_a_serial_openbao_issued(first, fleet, inv, site_vars, pki, outputs, bao):
    before = {i: served_serial(fleet.host(i).ip) for i in SERVERS}
    wipe(pki)
    out = run(RENEW, inv, {**site_vars, "mtls_renew_before_days": 400}, outputs)[1]  # everything is due
    assert "due: " in out
    for i in SERVERS:
        serial = served_serial(fleet.host(i).ip)
        assert serial and serial != before[i]
        status, body = bao_get(bao, f"server-ca/cert/{colons(serial)}")
        assert status == 200, body
        assert client_status(fleet, fleet.host(i).ip) == "200"


def test_verify_from_a_wiped_cache_checks_the_chains_against_openbaos_root(first, fleet, inv, site_vars, pki, outputs):
    """verify.yml signs nothing and needs no store: the root of trust is fetched from OpenBao (root/ca/pem)."""
    wipe(pki)
    rc, out = run(VERIFY, inv, site_vars, outputs, check=False)
    assert rc == 0, out[-4000:]
    assert "all 4 probes passed" in out  # control node -> 2 servers, client host -> 2 servers
    for i in SERVERS:
        assert re.search(rf"control node -> {fleet.host(i).name} \(\S+\): HTTP 400, TLSv1\.[23], 2 server "
                         rf"certificate\(s\): OK", out), out[-3000:]
    assert not (pki / "certs").exists() and not (pki / "ca").exists(), "verify.yml filled the store"


def newest_issued(bao, name):
    """The serial (as served_serial gives it) of the certificate for CN ``name`` that OpenBao's server-ca issued
    last (latest not before)."""
    found = []
    for key in json.loads(bao_get(bao, "server-ca/certs?list=true")[1])["data"]["keys"]:
        pem = json.loads(bao_get(bao, f"server-ca/cert/{key}")[1])["data"]["certificate"]
        cert = x509.load_pem_x509_certificate(pem.encode())
        if cert.subject.rfc4514_string() == f"CN={name}":
            found.append((cert.not_valid_before_utc, format(cert.serial_number, "x")))
    return max(found)[1]


def assert_consistent(fleet, bao, root):
    """Every server serves the certificate OpenBao issued last for it (never an older one put back), unrevoked,
    in a chain that verifies; every client is served."""
    for i in SERVERS:
        ip = fleet.host(i).ip
        serial = served_serial(ip)
        assert serial == newest_issued(bao, fleet.host(i).name), f"{fleet.host(i).name} serves an older certificate"
        status, body = bao_get(bao, f"server-ca/cert/{colons(serial)}")
        assert status == 200 and not json.loads(body)["data"].get("revocation_time"), (serial, body)
        proc = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:443", "-CAfile", root, "-verify_ip", ip,
                               "-verify_return_error"], input="", capture_output=True, check=False, text=True, timeout=30)
        assert proc.returncode == 0 and "Verify return code: 0 (ok)" in proc.stdout, proc.stdout[-1500:]
        assert client_status(fleet, ip) == "200"


def test_two_controllers_at_once_both_succeed_and_the_fleet_is_consistent(first, fleet, inv, site_vars, outputs, bao,
                                                                          bao_root, tmp_path):
    """Two control nodes, each with its own empty store, run site.yml and renew.yml (everything due) at the same
    time against the same OpenBao and fleet: both succeed and every server serves the certificate OpenBao issued
    last for it. (Before install_files' keep_newer, site.yml put back the certificate it had read from the host
    before the renewal in 4 of 12 such runs, and renew.yml then failed its served-serial proof.)"""
    jobs = [(SITE, {**site_vars, "mtls_pki_dir": str(tmp_path / "a" / "pki")}),
            (RENEW, {**site_vars, "mtls_pki_dir": str(tmp_path / "b" / "pki"), "mtls_renew_before_days": 400})]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda job: run_playbook(job[0], inv, job[1], "-vvv", check=False), jobs))
    for (playbook, _extra), (rc, out) in zip(jobs, done):
        outputs.append(out)
        assert rc == 0, f"{playbook} failed while another controller ran:\n{out[-4000:]}"
    assert "due: " in done[1][1]
    assert_consistent(fleet, bao, bao_root())


def run_paused(playbook, inv, extra, meanwhile, control_dir):
    """ansible-playbook as a control node of its own (own store, own ssh control sockets), stopped (SIGSTOP to its
    process group) once its PKI play is done and before it deploys anything; ``meanwhile()`` runs then, and the
    run goes on. Returns (returncode, output)."""
    env = {**ansible_env(), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)}
    proc = subprocess.Popen(["ansible-playbook", "-i", str(inv), playbook, "-e", json.dumps(extra), "-vvv"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("PLAY [Hosts whose key the control node refused"):  # the play after the PKI play
                os.killpg(proc.pid, signal.SIGSTOP)
                try:
                    meanwhile()
                finally:
                    os.killpg(proc.pid, signal.SIGCONT)
                break
        rest = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, "".join(lines) + rest


def client_serial(fleet):
    out = on_client(fleet, "openssl x509 -noout -serial -in /etc/mtls/client/cert.pem").stdout
    return out.strip().split("=")[-1].lower().lstrip("0")


@pytest.mark.parametrize("paused", [SITE, RENEW])
def test_a_run_never_puts_back_an_older_certificate_another_controller_just_renewed(
        paused, first, fleet, inv, site_vars, outputs, bao, bao_root, tmp_path):
    """Controller A (site.yml: it read what the hosts hold; renew.yml: it renewed everything) is held between its
    PKI play and its deployment while controller B renews everything and deploys. When A goes on, every host keeps
    B's newer certificate (A is warned, and renew.yml's proof expects the kept serial): nothing older is put back."""
    due = {"mtls_renew_before_days": 400}
    newer = {}

    def controller_b():
        rc, out = run_playbook(RENEW, inv, {**site_vars, **due, "mtls_pki_dir": str(tmp_path / "b" / "pki")},
                               "-vvv", check=False)
        outputs.append(out)
        assert rc == 0, out[-4000:]
        newer.update({i: served_serial(fleet.host(i).ip) for i in SERVERS}, client=client_serial(fleet))

    before = {i: served_serial(fleet.host(i).ip) for i in SERVERS}
    extra = {**site_vars, **(due if paused == RENEW else {}), "mtls_pki_dir": str(tmp_path / "a" / "pki")}
    (tmp_path / "ssh").mkdir()
    rc, out = run_paused(paused, inv, extra, controller_b, tmp_path / "ssh")
    outputs.append(out)
    assert rc == 0, out[-4000:]
    assert all(newer[i] != before[i] for i in SERVERS)
    served = {i: served_serial(fleet.host(i).ip) for i in SERVERS}
    assert served == {i: newer[i] for i in SERVERS}, f"served {served}; B deployed {newer}; before B {before}"
    assert client_serial(fleet) == newer["client"], "the client's certificate went back to an older one"
    squashed = re.sub(r"\s+", " ", out)
    for i in SERVERS:
        assert f"not replaced: it holds a newer certificate (serial {newer[i]}," in squashed, out[-4000:]
    assert_consistent(fleet, bao, bao_root())


def test_revoke_from_a_wiped_cache_gets_400(first, fleet, inv, site_vars, pki, outputs, bao_root):
    client = fleet.host(CLIENT).name
    wipe(pki)
    out = run(REVOKE, inv, {**site_vars, "mtls_revoke": client}, outputs)[1]
    assert f"{client} " in out and " revoked" in out
    root = bao_root()
    for i in SERVERS:
        ip = fleet.host(i).ip
        assert client_status(fleet, ip) == "400"
        status, body = curl(f"https://{ip}/", cacert=root)
        assert status == 400, body


def test_report_from_a_wiped_cache_lists_what_openbao_issued(first, fleet, inv, site_vars, pki, outputs, bao):
    wipe(pki)
    report_dir = pki.parent / "reports"
    out = run(REPORT, inv, {**site_vars, "mtls_report_dir": str(report_dir)}, outputs)[1]
    rows = json.load(open(report_dir / "expiry.json"))["certificates"]
    by_name = {r["name"]: r for r in rows}
    assert {"root", "server-ca", "client-ca"} <= set(by_name)
    assert by_name[fleet.host(CLIENT).name]["status"] == "revoked"
    for i in SERVERS:
        served = served_serial(fleet.host(i).ip)
        assert any(r["serial"].lower().lstrip("0") == served for r in rows), (served, rows)


def test_ansible_runner_job_with_a_fresh_data_dir_renews_what_is_due(first, fleet, inv, site_vars, pki, outputs, bao,
                                                                     tmp_path):
    """As AWX runs a job: ansible-runner, a new private data directory, no store, the token injected as BAO_TOKEN
    (a credential), not in the inventory. Everything is due (renew window 400 days): every server is renewed."""
    wipe(pki)
    with open(inv) as f:
        data = yaml.safe_load(f)
    del data["all"]["vars"]["mtls_openbao_token"]
    job = tmp_path / "job"
    for sub in ("inventory", "env"):
        (job / sub).mkdir(parents=True)
    (job / "inventory" / "hosts.yml").write_text(yaml.safe_dump(data))
    settings = {k: v for k, v in ansible_env().items() if k.startswith("ANSIBLE_")}
    (job / "env" / "envvars").write_text(yaml.safe_dump({**settings, "BAO_TOKEN": bao.token}))
    (job / "env" / "extravars").write_text(yaml.safe_dump({**site_vars, "mtls_renew_before_days": 400}))
    before = {i: served_serial(fleet.host(i).ip) for i in SERVERS}
    env = {k: v for k, v in ansible_env().items()
           if not k.startswith("ANSIBLE_") and k not in ("BAO_TOKEN", "VAULT_TOKEN")}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-runner"), "run", str(job), "-p",
                           "mtls.rollout.renew", "--ident", "renew"], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    stdout = (job / "artifacts" / "renew" / "stdout").read_text()
    outputs.append(stdout)
    assert done.returncode == 0 and (job / "artifacts" / "renew" / "status").read_text() == "successful", stdout[-4000:]
    for i in SERVERS:
        serial = served_serial(fleet.host(i).ip)
        assert serial != before[i] and bao_get(bao, f"server-ca/cert/{colons(serial)}")[0] == 200
    # the job's output and events (runner's own 'command' artifact records the env it was given, BAO_TOKEN too)
    for path in [job / "artifacts" / "renew" / "stdout", *(job / "artifacts" / "renew" / "job_events").glob("*")]:
        assert bao.token not in path.read_text(errors="replace"), path


def test_the_token_never_appears_in_any_output(first, bao, outputs):
    assert len(outputs) >= 6
    for out in outputs:
        assert bao.token not in out
