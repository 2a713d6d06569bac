"""Issue 12 HA: a 3-node OpenBao raft cluster (TLS) loses its active node, killed by pid, while renew.yml re-issues
every certificate of a 3-server fleet with host keys.

The run completes after failover (or fails clearly and a re-run completes), a client loop against every server
sees no failed request, no certificate gets two serials in the run, and every server ends serving a chain that
verifies against OpenBao's root with the serial OpenBao recorded.
"""

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.e2e.helpers import ansible_env, curl, recap, run_playbook, ROOT
from tests.e2e.test_openbao_fleet import colons, served_serial
from tests.openbao_server import RaftCluster

SERVERS, CLIENT = [1, 2, 3], 4
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def bao():
    with RaftCluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    return make_module_fleet("ha", hosts=4, groups={"mtls_servers": SERVERS, "mtls_clients": [CLIENT]})


@pytest.fixture(scope="module")
def inv(fleet, bao, tmp_path_factory):
    with open(fleet.inventory) as f:
        data = yaml.safe_load(f)
    data["all"].setdefault("vars", {}).update({
        "mtls_key_location": "host", "mtls_ca_backend": "openbao", "mtls_openbao_addr": bao.addrs,
        "mtls_openbao_ca_cert": bao.ca_cert, "mtls_openbao_token": bao.token})
    path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def site_vars(tmp_path_factory):
    return {"mtls_pki_dir": str(tmp_path_factory.mktemp("cache") / "pki"), "mtls_nginx_install": False,
            "mtls_client_identities": [{"name": "loop"}]}


def bao_get(bao, path):
    """(status, JSON) of an authenticated GET, from whichever node answers."""
    for addr in bao.addrs:
        req = urllib.request.Request(f"{addr}/v1/{path}", headers={"X-Vault-Token": bao.token})
        try:
            with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=bao.ca_cert), timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return 404, None
        except OSError:
            continue
    raise AssertionError("no OpenBao node answered")


def issued(bao):
    """{serial: common name} of every server certificate OpenBao recorded."""
    out = {}
    for serial in bao_get(bao, "server-ca/certs?list=true")[1]["data"]["keys"]:
        pem = bao_get(bao, f"server-ca/cert/{serial}")[1]["data"]["certificate"]
        cn = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline"], input=pem,
                            capture_output=True, check=False, text=True).stdout
        out[serial.replace(":", "").lower().lstrip("0")] = cn.strip()
    return out


class ClientLoop(threading.Thread):
    """GETs every server with the controller-made identity 'loop' until stopped; counts what was not 200."""

    def __init__(self, ips, pki, root):
        super().__init__(daemon=True)
        self.ips, self.pki, self.root = ips, pki, root
        self.done, self.ok, self.failed = threading.Event(), 0, []

    def run(self):
        while not self.done.is_set():
            for ip in self.ips:
                status, body = curl(f"https://{ip}/", cert=f"{self.pki}/certs/loop/cert.pem",
                                    key=f"{self.pki}/certs/loop/key.pem", cacert=self.root)
                if status == 200:
                    self.ok += 1
                else:
                    self.failed.append((ip, status, body[-200:]))
            time.sleep(0.1)


def test_renew_survives_losing_the_active_node(fleet, inv, site_vars, bao, tmp_path):
    run_playbook("mtls.rollout.site", inv, site_vars)
    pki = site_vars["mtls_pki_dir"]
    root = tmp_path / "root.pem"
    root.write_text(open(f"{pki}/ca/root/cert.pem").read())
    ips = [fleet.host(i).ip for i in SERVERS]
    before = {ip: served_serial(ip) for ip in ips}
    known = set(issued(bao))
    loop = ClientLoop(ips, pki, str(root))
    loop.start()
    try:
        argv = ["ansible-playbook", "-i", str(inv), "mtls.rollout.renew", "-e",
                json.dumps({**site_vars, "mtls_renew_before_days": 400})]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**ansible_env(), "PYTHONUNBUFFERED": "1"},
                                cwd=ROOT)
        out, killed = [], None
        for line in proc.stdout:
            out.append(line)
            if killed is None and "Ensure the server certificates" in line:
                killed = bao.active()
                bao.kill(killed)  # by pid, while the batch is being signed
        proc.wait(timeout=900)
        text = "".join(out)
        assert killed is not None, text[-3000:]
        print(f"renew.yml with {killed.name} (pid {killed.pid}) killed: exit {proc.returncode}")
        if proc.returncode != 0:  # failed clearly: a re-run completes
            assert "OpenBao" in text, text[-3000:]
            text = run_playbook("mtls.rollout.renew", inv, site_vars)[1]
        assert all(c["failed"] == 0 for c in recap(text).values())
    finally:
        loop.done.set()
        loop.join(timeout=60)
    assert loop.ok > 0 and loop.failed == [], loop.failed[:5]
    print(f"client loop: {loop.ok} requests answered 200, {len(loop.failed)} failed")
    new = {s: cn for s, cn in issued(bao).items() if s not in known}
    names = list(new.values())
    assert len(names) == len(set(names)) == len(SERVERS), f"a certificate issued twice in the run: {new}"
    for ip in ips:
        serial = served_serial(ip)
        assert serial != before[ip] and serial in new, (ip, serial, new)
        assert bao_get(bao, f"server-ca/cert/{colons(serial)}")[0] == 200
        proc = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:443", "-CAfile", str(root), "-verify_ip", ip,
                               "-verify_return_error"], input="", capture_output=True, check=False, text=True, timeout=30)
        assert "Verify return code: 0 (ok)" in proc.stdout, proc.stdout[-1500:]
    assert not os.path.exists(f"{pki}/ca/root/key.pem")
