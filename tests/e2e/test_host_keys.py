"""Issue 11 end to end: keys made on the hosts that use them (mtls_key_location host); only certificates travel.

Fleet: two nginx servers and one client host, none with the Python cryptography library (removed inside each
host's /usr overlay): keys, CSRs and the client's PKCS#12 bundle are made with the hosts' openssl. Server 1
starts with a controller key (a mixed fleet) and is then switched to a host key. Every -vvv output, the store
and the control node's temp dirs are searched for the bytes of every host key.
"""

import base64
import json
import os
import re
import subprocess

import pytest
import yaml

from tests.e2e.helpers import changed_tasks, curl, recap, run_playbook

SITE, RENEW = "mtls.rollout.site", "mtls.rollout.renew"
SERVERS, CLIENT = [1, 2], 3
PASSWORD = "host p12 pw"
SERVER_KEY, CLIENT_KEY = "/etc/nginx/mtls/key.pem", "/etc/mtls/client/key.pem"
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    f = make_module_fleet("hk", hosts=3, groups={"mtls_servers": SERVERS, "mtls_clients": [CLIENT]})
    for i in SERVERS + [CLIENT]:  # a plain host: no python3-cryptography
        f.run(i, ["sh", "-c", "rm -rf /usr/lib/python3/dist-packages/cryptography*"], check=True)
        assert f.run(i, ["python3", "-c", "import cryptography"]).returncode != 0
    return f


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tmp_path_factory.mktemp("pki")


def inventory(fleet, tmp_path_factory, server1="host"):
    """The fleet's inventory with mtls_key_location host for all, and server 1's own setting as a host var."""
    with open(fleet.inventory) as f:
        data = yaml.safe_load(f)
    data["all"].setdefault("vars", {})["mtls_key_location"] = "host"
    data["all"]["hosts"][fleet.host(SERVERS[0]).name]["mtls_key_location"] = server1
    path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def site_vars(pki):
    return {"mtls_pki_dir": str(pki), "mtls_nginx_install": False, "mtls_client_pkcs12_password": PASSWORD,
            "mtls_client_identities": [{"name": "client1"}]}


class Seen:
    """Every playbook output of this module and every host key that existed after each run, searched at the end."""

    def __init__(self, fleet):
        self.fleet, self.texts, self.needles = fleet, [], set()

    def __iter__(self):
        return iter(self.texts)

    def __len__(self):
        return len(self.texts)

    def append(self, out):
        self.texts.append(out)
        for i, path in [(i, SERVER_KEY) for i in SERVERS] + [(CLIENT, CLIENT_KEY)]:
            for candidate in (path, path + ".next"):
                proc = self.fleet.run(i, ["base64", "-w0", candidate])
                if proc.returncode == 0:
                    self.needles |= _needles(base64.b64decode(proc.stdout).decode())


def _needles(pem):
    """Text forms of a key: PEM body lines and base64 of the DER (in 40-char pieces), and hex, past the header."""
    lines = pem.strip().splitlines()[1:-1]
    try:
        der = base64.b64decode("".join(lines))
    except ValueError:
        return set()  # a damaged key file
    b64 = base64.b64encode(der).decode()
    # the first 60 bytes hold the PKCS#8 header and algorithm, the same in every key of a type: skipped
    return ({line for line in lines[1:] if len(line) >= 40} | {b64[k:k + 40] for k in range(80, len(b64) - 40, 40)}
            | {der.hex()[120:184]})


@pytest.fixture(scope="module")
def outputs(fleet):
    return Seen(fleet)


def run(playbook, inv, extra, outputs, *args, check=True):
    rc, out = run_playbook(playbook, inv, extra, "-vvv", *args, check=check)
    outputs.append(out)
    return rc, out


@pytest.fixture(scope="module")
def mixed(fleet, tmp_path_factory, site_vars, outputs):
    """First site.yml: server 1 with a controller key, the others with host keys."""
    return run(SITE, inventory(fleet, tmp_path_factory, server1="controller"), site_vars, outputs)[1]


@pytest.fixture(scope="module")
def inv(fleet, tmp_path_factory):
    return inventory(fleet, tmp_path_factory)


@pytest.fixture(scope="module")
def switched(mixed, fleet, inv, site_vars, pki, outputs):
    """Server 1 switched to a host key; returns (output, the key the controller had pushed to it)."""
    pushed = open(f"{pki}/certs/{fleet.host(SERVERS[0]).name}-server/key.pem", "rb").read()
    return run(SITE, inv, site_vars, outputs)[1], pushed


def read(fleet, i, path):
    return base64.b64decode(fleet.run(i, ["base64", "-w0", path], check=True).stdout)


def identity(pki, name):
    return {"cert": f"{pki}/certs/{name}/cert.pem", "key": f"{pki}/certs/{name}/key.pem"}


def served_pubkey(ip):
    return subprocess.run(f"openssl s_client -connect {ip}:443 </dev/null 2>/dev/null | openssl x509 -noout -pubkey",
                          shell=True, capture_output=True, text=True, timeout=30, check=False).stdout


def host_pubkey(fleet, i, path):
    return fleet.run(i, ["openssl", "pkey", "-in", path, "-pubout"], check=True).stdout


def on_client(fleet, command):
    return subprocess.run(fleet.ssh_argv(CLIENT, command), capture_output=True, text=True, timeout=60, check=False)


def test_mixed_fleet_serves_and_keeps_host_keys_out_of_the_store(mixed, fleet, pki):
    counts = recap(mixed)
    assert all(counts[fleet.host(i).name]["failed"] == 0 for i in SERVERS + [CLIENT])
    web1, web2, cli = (fleet.host(i).name for i in (SERVERS[0], SERVERS[1], CLIENT))
    assert os.path.exists(f"{pki}/certs/{web1}-server/key.pem")  # controller key
    assert not os.path.exists(f"{pki}/certs/{web2}-server/key.pem")
    assert not os.path.exists(f"{pki}/certs/{cli}/key.pem") and not os.path.exists(f"{pki}/certs/{cli}/bundle.p12")
    for i in SERVERS:
        assert served_pubkey(fleet.host(i).ip) == host_pubkey(fleet, i, SERVER_KEY)
        mode = fleet.run(i, ["stat", "-c", "%a %U", SERVER_KEY], check=True).stdout.split()
        assert mode == ["400", "root"]


def test_switch_to_a_host_key_reissues_with_a_reason_and_drops_the_pushed_key(switched, fleet, pki):
    out, pushed = switched
    name = f"{fleet.host(SERVERS[0]).name}-server"
    assert re.search(rf"'name': '{name}'.*?'reason': 'key_location_changed", out, re.S) or \
        re.search(rf'"name": "{name}".*?"reason": "key_location_changed', out, re.S), "no key_location_changed"
    assert not os.path.exists(f"{pki}/certs/{name}/key.pem")
    assert read(fleet, SERVERS[0], SERVER_KEY) != pushed
    assert served_pubkey(fleet.host(SERVERS[0]).ip) == host_pubkey(fleet, SERVERS[0], SERVER_KEY)


def test_clients_get_200_and_no_certificate_400(switched, fleet, pki):
    root = f"{pki}/ca/root/cert.pem"
    for i in SERVERS:
        ip = fleet.host(i).ip
        status, body = curl(f"https://{ip}/", cacert=root, **identity(pki, "client1"))
        assert status == 200, body
        status, body = curl(f"https://{ip}/", cacert=root)
        assert status == 400 and "No required SSL certificate was sent" in body
        proc = on_client(fleet, f"curl -sS --max-time 10 --cert {CLIENT_KEY[:-7]}cert.pem --key {CLIENT_KEY} "
                                f"https://{ip}/")  # server verified through the system trust store
        assert proc.returncode == 0 and json.loads(proc.stdout)["client_verify"] == "SUCCESS", proc.stderr


def test_client_bundle_was_built_on_the_host_from_its_key(switched, fleet):
    info = fleet.run(CLIENT, ["openssl", "pkcs12", "-in", "/etc/mtls/client/client.p12", "-nodes", "-passin",
                              f"pass:{PASSWORD}"], check=True).stdout
    assert info.count("BEGIN CERTIFICATE") == 3  # leaf, client-ca, root
    key_in_bundle = fleet.run(CLIENT, ["sh", "-c", f"openssl pkcs12 -in /etc/mtls/client/client.p12 -nocerts -nodes "
                                                   f"-passin 'pass:{PASSWORD}' | openssl pkey -pubout"],
                              check=True).stdout
    assert key_in_bundle == host_pubkey(fleet, CLIENT, CLIENT_KEY)


def test_second_run_changes_nothing_and_signs_nothing(switched, fleet, inv, site_vars, pki, outputs):
    records = len(json.load(open(f"{pki}/index.json"))["issued"])
    out = run(SITE, inv, site_vars, outputs)[1]
    for host, counts in recap(out).items():
        assert counts["changed"] == 0, f"{host} changed on a second run: {changed_tasks(out, host)}"
    assert len(json.load(open(f"{pki}/index.json"))["issued"]) == records


def test_check_mode_says_what_would_be_signed_and_changes_nothing(switched, fleet, inv, site_vars, pki, outputs):
    index = open(f"{pki}/index.json", "rb").read()
    keys = {i: read(fleet, i, SERVER_KEY) for i in SERVERS}
    extra = {**site_vars, "mtls_server_certificate": {"dns": ["extra.example.com"]}}
    out = run(SITE, inv, extra, outputs, "--check")[1]
    assert "spec_changed: dns" in out
    assert open(f"{pki}/index.json", "rb").read() == index
    assert {i: read(fleet, i, SERVER_KEY) for i in SERVERS} == keys


def test_renewal_keeps_each_host_key_file_byte_and_inode(switched, fleet, inv, site_vars, pki, outputs):
    before = {i: (read(fleet, i, SERVER_KEY), fleet.run(i, ["stat", "-c", "%i", SERVER_KEY]).stdout) for i in SERVERS}
    serials = {i: subprocess.run(["openssl", "x509", "-noout", "-serial", "-in",
                                  f"{pki}/certs/{fleet.host(i).name}-server/cert.pem"],
                                 capture_output=True, text=True, check=False).stdout for i in SERVERS}
    run(RENEW, inv, {**site_vars, "mtls_renew_before_days": 400}, outputs)  # everything is due
    for i in SERVERS:
        assert (read(fleet, i, SERVER_KEY), fleet.run(i, ["stat", "-c", "%i", SERVER_KEY]).stdout) == before[i]
        now = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in",
                              f"{pki}/certs/{fleet.host(i).name}-server/cert.pem"], capture_output=True, text=True, check=False)
        assert now.stdout != serials[i]
        assert served_pubkey(fleet.host(i).ip) == host_pubkey(fleet, i, SERVER_KEY)


def test_key_rotation_makes_new_keys_on_the_hosts(switched, fleet, inv, site_vars, pki, outputs):
    before = {i: read(fleet, i, SERVER_KEY) for i in SERVERS}
    client_before = read(fleet, CLIENT, CLIENT_KEY)
    run(RENEW, inv, {**site_vars, "mtls_rotate_keys": True}, outputs)
    for i in SERVERS:
        assert read(fleet, i, SERVER_KEY) != before[i]
        assert fleet.run(i, ["test", "-e", SERVER_KEY + ".next"]).returncode != 0
        assert served_pubkey(fleet.host(i).ip) == host_pubkey(fleet, i, SERVER_KEY)
    assert read(fleet, CLIENT, CLIENT_KEY) != client_before
    proc = on_client(fleet, f"curl -sS -o /dev/null -w '%{{http_code}}' --cert /etc/mtls/client/cert.pem "
                            f"--key {CLIENT_KEY} https://{fleet.host(SERVERS[0]).ip}/")
    assert proc.stdout == "200", proc.stderr


def test_served_chain_verifies_against_the_root_alone_by_ip(switched, fleet, pki):
    for i in SERVERS:
        ip = fleet.host(i).ip
        proc = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:443", "-showcerts", "-CAfile",
                               f"{pki}/ca/root/cert.pem", "-verify_ip", ip, "-verify_return_error"],
                              input="", capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0 and "Verify return code: 0 (ok)" in proc.stdout, proc.stdout[-1500:]
        assert proc.stdout.count("BEGIN CERTIFICATE") == 2  # leaf, then server-ca


def test_revoked_host_identity_gets_400(switched, fleet, inv, site_vars, pki, outputs):
    client = fleet.host(CLIENT).name
    run("mtls.rollout.revoke", inv, {**site_vars, "mtls_nginx_crl": True, "mtls_revoke": client}, outputs)
    for i in SERVERS:
        url = f"https://{fleet.host(i).ip}/"
        proc = on_client(fleet, f"curl -sS -o /dev/null -w '%{{http_code}}' --cert /etc/mtls/client/cert.pem "
                                f"--key {CLIENT_KEY} {url}")
        assert proc.stdout == "400", proc.stderr
        status, body = curl(url, cacert=f"{pki}/ca/root/cert.pem", **identity(pki, "client1"))
        assert status == 200, body


def test_a_host_key_under_two_intermediates_is_accepted_with_the_computed_depth(switched, fleet, inv, site_vars,
                                                                                outputs):
    """root -> client-ca -> client-ca-2 -> the client host's certificate for its own key: ssl_verify_depth 2."""
    cas = [{"name": "root"}, {"name": "server-ca", "issuer": "root", "path_length": 0},
           {"name": "client-ca", "issuer": "root"}, {"name": "client-ca-2", "issuer": "client-ca", "path_length": 0}]
    deep = {**site_vars, "mtls_cas": cas, "mtls_client_issuer": "client-ca-2",
            "mtls_nginx_client_issuers": ["client-ca-2"]}
    run(SITE, inv, deep, outputs)
    for i in SERVERS:
        conf = fleet.run(i, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout
        assert re.search(r"ssl_verify_depth\s+2;", conf), conf
        proc = on_client(fleet, f"curl -sS -o /dev/null -w '%{{http_code}}' --cert /etc/mtls/client/fullchain.pem "
                                f"--key {CLIENT_KEY} https://{fleet.host(i).ip}/")
        assert proc.stdout == "200", proc.stderr


def test_no_host_key_bytes_anywhere_on_the_control_node(switched, fleet, pki, outputs):
    """Every run's -vvv output, the store and the control node's temp dirs hold no byte of any host key."""
    needles = outputs.needles
    assert len(outputs) >= 5 and len(needles) > 20
    for out in outputs:
        found = [n for n in needles if n in out]
        assert not found, f"host key material in playbook output: {found[:2]}"
    layers = os.path.realpath(str(fleet.layers_root))
    roots = [str(pki), os.path.expanduser("~/.ansible/tmp"), "/tmp", "/var/tmp"]
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not os.path.realpath(os.path.join(dirpath, d)).startswith(layers)]
            for f in filenames:
                path = os.path.join(dirpath, f)
                try:
                    if os.path.islink(path) or os.path.getsize(path) > 4 << 20:
                        continue
                    data = open(path, "rb").read().decode("latin-1")
                except OSError:
                    continue
                found = [n for n in needles if n in data]
                assert not found, f"host key material in {path}"


def test_a_corrupted_key_fails_that_host_only_and_changes_nothing(switched, fleet, inv, site_vars, outputs):
    bad = SERVERS[1]
    fleet.run(bad, ["sh", "-c", f"chmod 600 {SERVER_KEY} && head -c 100 {SERVER_KEY} > {SERVER_KEY}.cut && "
                                f"mv {SERVER_KEY}.cut {SERVER_KEY} && chmod 400 {SERVER_KEY}"], check=True)
    damaged = read(fleet, bad, SERVER_KEY)
    served = served_pubkey(fleet.host(bad).ip)
    rc, out = run(SITE, inv, {**site_vars, "mtls_server_certificate": {"dns": ["again.example.com"]}}, outputs,
                  check=False)
    counts = recap(out)
    assert rc != 0 and counts[fleet.host(bad).name]["failed"] == 1
    assert f"{SERVER_KEY} is not a readable private key" in out
    assert counts[fleet.host(SERVERS[0]).name]["failed"] == 0
    assert read(fleet, bad, SERVER_KEY) == damaged and served_pubkey(fleet.host(bad).ip) == served


def test_a_cloned_host_key_fails_that_host_only(switched, fleet, inv, site_vars, pki, outputs):
    """Server 2 offers server 1's key (a host cloned from another's image): the control node refuses to certify it
    a second time. Server 2 fails, saying why, with nothing of it changed; server 1 gets its new certificate and
    the client goes on, in the same run."""
    clone, source = fleet.host(SERVERS[1]), fleet.host(SERVERS[0])
    key = base64.b64encode(read(fleet, SERVERS[0], SERVER_KEY)).decode()
    fleet.run(SERVERS[1], ["sh", "-c", f"chmod 600 {SERVER_KEY} && echo {key} | base64 -d > {SERVER_KEY} && "
                                       f"chmod 400 {SERVER_KEY}"], check=True)
    stored = open(f"{pki}/certs/{clone.name}-server/cert.pem", "rb").read()
    served = served_pubkey(clone.ip)
    rc, out = run(SITE, inv, {**site_vars, "mtls_server_certificate": {"dns": ["clone.example.com"]}}, outputs,
                  check=False)
    counts = recap(out)
    assert rc != 0 and counts[clone.name]["failed"] == 1, out[-3000:]
    assert f"certificate '{clone.name}-server' is the key of certificate '{source.name}-server'" in out
    assert counts[source.name]["failed"] == 0 and counts[fleet.host(CLIENT).name]["failed"] == 0
    assert "DNS:clone.example.com" in subprocess.run(
        f"openssl s_client -connect {source.ip}:443 </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName",
        shell=True, capture_output=True, text=True, timeout=30, check=False).stdout
    assert open(f"{pki}/certs/{clone.name}-server/cert.pem", "rb").read() == stored
    assert served_pubkey(clone.ip) == served
