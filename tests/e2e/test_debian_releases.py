"""Issue 15 item 9: the roles and host modules on Debian 11, 12 and 13 test hosts.

Fleet: one nginx server and one client host per release (tests/harness `release=`: each host runs chrooted into
an overlay of a cached debootstrap root), so OpenSSL 1.1.1/3.0/3.5, nginx 1.18/1.22/1.26 and Python 3.9/3.11/3.13
all run the host side: site.yml, renew.yml, then every client calls every server with its deployed identity.
Once with keys made on the control node, once with keys made on the hosts by each release's openssl.
"""

import json
import os
import subprocess

import pytest

from tests.e2e.helpers import changed_tasks, recap, run_playbook

SITE, RENEW = "mtls.rollout.site", "mtls.rollout.renew"
RELEASES = ["bullseye", "bookworm", "trixie"]
# What each release must bring: os-release VERSION_ID, then prefixes of `openssl version`, `nginx -v`, `python3 -V`
EXPECTED = {
    "bullseye": ("11", "OpenSSL 1.1.1", "nginx/1.18.", "Python 3.9."),
    "bookworm": ("12", "OpenSSL 3.0.", "nginx/1.22.", "Python 3.11."),
    "trixie": ("13", "OpenSSL 3.5.", "nginx/1.26.", "Python 3.13."),
}
SERVERS, CLIENTS = [1, 2, 3], [4, 5, 6]  # server i and client i + 3 run RELEASES[i - 1]
CLIENT_DIR, SERVER_DIR = "/etc/mtls/client", "/etc/nginx/mtls"
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module", params=["controller", "host"])
def key_location(request):
    return request.param


@pytest.fixture(scope="module")
def fleet(make_module_fleet, key_location):
    return make_module_fleet(f"deb-{key_location[0]}", hosts=6, release=RELEASES * 2,
                             groups={"mtls_servers": SERVERS, "mtls_clients": CLIENTS})


@pytest.fixture(scope="module")
def site_vars(tmp_path_factory, key_location):
    return {"mtls_pki_dir": str(tmp_path_factory.mktemp("pki")), "mtls_nginx_install": False,
            "mtls_key_location": key_location, "mtls_client_pkcs12_password": "p12 pw",
            "mtls_client_nss": True}


@pytest.fixture(scope="module")
def deployed(fleet, site_vars):
    return run_playbook(SITE, fleet.inventory, site_vars)[1]


def on(fleet, i, command):
    return subprocess.run(fleet.ssh_argv(i, command), capture_output=True, text=True, timeout=60, check=False)


def serial(site_vars, name):
    return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in",
                           f"{site_vars['mtls_pki_dir']}/certs/{name}/cert.pem"],
                          capture_output=True, text=True, check=True).stdout


def handshakes(fleet):
    """HTTP status of every client calling every server with its deployed identity (server verified through
    the client's system trust store), as {(client, server): status or error}."""
    found = {}
    for c in CLIENTS:
        for s in SERVERS:
            proc = on(fleet, c, f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' "
                                f"--cert {CLIENT_DIR}/cert.pem --key {CLIENT_DIR}/key.pem https://{fleet.host(s).ip}/")
            found[(c, s)] = proc.stdout if proc.stdout == "200" else f"{proc.stdout} {proc.stderr.strip()}"
    return found


def test_each_host_runs_its_release(fleet):
    for i in SERVERS + CLIENTS:
        version_id, openssl, nginx, python = EXPECTED[RELEASES[(i - 1) % 3]]
        proc = on(fleet, i, ". /etc/os-release; echo $VERSION_ID; openssl version; nginx -v 2>&1; python3 -V")
        lines = proc.stdout.splitlines()
        assert proc.returncode == 0 and len(lines) == 4, proc.stderr
        assert lines[0] == version_id and lines[1].startswith(openssl), lines
        assert nginx in lines[2] and lines[3].startswith(python), lines


def test_site_deploys_every_release(deployed, fleet, site_vars, key_location):
    counts = recap(deployed)
    assert sorted(counts) == sorted(["localhost"] + [h.name for h in fleet.hosts]), counts
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in counts.values()), counts
    pki = site_vars["mtls_pki_dir"]
    for s in SERVERS:
        name = fleet.host(s).name
        assert os.path.exists(f"{pki}/certs/{name}-server/key.pem") == (key_location == "controller")
        mode = on(fleet, s, f"stat -c '%a %U' {SERVER_DIR}/key.pem").stdout.split()
        assert mode == ["400", "root"]
    for c in CLIENTS:
        # the PKCS#12 bundle opens with the host's own openssl (1.1.1 included), with a key and 3 certificates
        proc = on(fleet, c, f"openssl pkcs12 -in {CLIENT_DIR}/client.p12 -nodes -passin 'pass:p12 pw' -info")
        assert proc.returncode == 0 and proc.stdout.count("BEGIN CERTIFICATE") == 3, proc.stderr
        assert "PRIVATE KEY-----" in proc.stdout and "AES-256-CBC" in proc.stderr and "MAC: sha256" in proc.stderr
        # the modern profile's 20000 rounds, except a bundle built by OpenSSL 1.1.1 (no -iter): 2048, with a warning
        old = key_location == "host" and RELEASES[c - 4] == "bullseye"
        assert f"Iteration {2048 if old else 20000}" in proc.stderr, proc.stderr
    warned = "cannot set PKCS#12 iterations" in deployed
    assert warned == (key_location == "host")


def test_every_client_gets_200_from_every_server(deployed, fleet):
    found = handshakes(fleet)
    assert all(v == "200" for v in found.values()), found


def test_second_site_run_changes_nothing(deployed, fleet, site_vars):
    out = run_playbook(SITE, fleet.inventory, site_vars)[1]
    for host, counts in recap(out).items():
        assert counts["changed"] == 0, f"{host} changed on a second run: {changed_tasks(out, host)}"


def test_renew_reissues_everything_and_clients_still_get_200(deployed, fleet, site_vars):
    names = [f"{fleet.host(s).name}-server" for s in SERVERS] + [fleet.host(c).name for c in CLIENTS]
    before = {n: serial(site_vars, n) for n in names}
    out = run_playbook(RENEW, fleet.inventory, {**site_vars, "mtls_renew_before_days": 400})[1]  # all due
    assert all(c["failed"] == 0 for c in recap(out).values()), recap(out)
    assert all(serial(site_vars, n) != before[n] for n in names), "renew.yml left a certificate as it was"
    for s in SERVERS:  # each nginx serves its new certificate
        served = subprocess.run(f"openssl s_client -connect {fleet.host(s).ip}:443 </dev/null 2>/dev/null"
                                " | openssl x509 -noout -serial", shell=True, capture_output=True, text=True,
                                timeout=30, check=False).stdout
        assert served == serial(site_vars, f"{fleet.host(s).name}-server")
    found = handshakes(fleet)
    assert all(v == "200" for v in found.values()), found
    index = json.load(open(f"{site_vars['mtls_pki_dir']}/index.json"))
    assert len(index["issued"]) >= 2 * len(names)
