"""Issue 4 end to end: client hosts get a PEM pair, a PKCS#12 bundle, the CA in the system trust store and
in a user's NSS database, and use them - curl and Python without --cacert, openssl and keytool on the bundle,
and a real browser (headless Chromium) presenting the certificate from its NSS database.

Fleet: two nginx servers and one client host with a user ``alice`` who owns the identity and whose
~/.pki/nssdb gets it. Everything on the client host is checked inside its namespaces (ssh or nsenter).
The whole module runs three times: with keys made on the control node, with keys made on the hosts
(mtls_key_location host: the client's key and PKCS#12 bundle are made on the client itself), and with host keys
and a real OpenBao as the CA (mtls_ca_backend openbao, issue 12: the store is then a cache of what OpenBao signed).
"""

import base64
import hashlib
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

from tests.e2e.helpers import ROOT, recap, run_playbook
from tests.openbao_server import RaftCluster, call

SITE = "mtls.rollout.site"
SERVERS, CLIENT = [1, 2], 3
USER = "alice"
SECRET = "Tr0ub4dor"
PASSWORD = f"{SECRET} p12'pw"  # a space and a quote: it must pass every hop without a shell seeing it
CLIENT_DIR = "/etc/mtls/client"
NSS_DIR = f"/home/{USER}/.pki/nssdb"
ANCHOR = "/usr/local/share/ca-certificates/mtls-rollout-root.crt"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
POLICY = "/etc/chromium/policies/managed/mtls-rollout-test.json"
ARTIFACTS = os.path.join(ROOT, "artifacts")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,360"]
pytestmark = pytest.mark.usefixtures("ansible_ok")


# (where keys are made, where the CAs live); the fleet's name
VARIANTS = {"controller": ("controller", "local", "cli"), "host": ("host", "local", "clih"),
            "openbao": ("host", "openbao", "clib")}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def key_location(variant):
    return VARIANTS[variant][0]


@pytest.fixture(scope="module")
def backend_vars(variant):
    """The inventory's backend variables: none for the local store; a one-node OpenBao (TLS) for openbao."""
    if VARIANTS[variant][1] == "local":
        yield {}
        return
    with RaftCluster(1) as bao:
        yield {"mtls_ca_backend": "openbao", "mtls_openbao_addr": bao.addrs, "mtls_openbao_ca_cert": bao.ca_cert,
               "mtls_openbao_token": bao.token}


@pytest.fixture(scope="module")
def fleet(make_module_fleet, variant):
    name = VARIANTS[variant][2]
    f = make_module_fleet(name, hosts=3, groups={"mtls_servers": SERVERS, "mtls_clients": [CLIENT]})
    f.run(CLIENT, ["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    return f


@pytest.fixture(scope="module")
def client(fleet):
    return fleet.host(CLIENT)


@pytest.fixture(scope="module")
def inventory(fleet, client, tmp_path_factory, key_location, backend_vars):
    """The fleet's inventory plus the client host's own variables (host vars, as users would set them)."""
    with open(fleet.inventory) as f:
        data = yaml.safe_load(f)
    data["all"].setdefault("vars", {}).update({"mtls_key_location": key_location, **backend_vars})
    data["all"]["hosts"][client.name].update({
        "mtls_client_owner": USER, "mtls_client_group": USER, "mtls_client_nss": True})
    path = tmp_path_factory.mktemp("inventory") / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory, variant):
    return tmp_path_factory.mktemp(f"pki-{variant}")  # a store (or OpenBao's cache) of each variant's own


@pytest.fixture(scope="module")
def site_vars(pki):
    # nginx is installed on the machine and seen by every host through its /usr overlay.
    return {"mtls_pki_dir": str(pki), "mtls_client_pkcs12_password": PASSWORD, "mtls_nginx_install": False}


@pytest.fixture(scope="module")
def deployed(inventory, site_vars):
    """The first site.yml run, at -vvv (where a leaked password would show); returns its output."""
    return run_playbook(SITE, inventory, site_vars, "-vvv")[1]


def on_client(fleet, command, user=None):
    """Run a shell command on the client host over ssh (as root, or as ``user``); CompletedProcess."""
    if user:
        command = f"runuser -u {user} -- sh -c {shlex.quote(command)}"
    return subprocess.run(fleet.ssh_argv(CLIENT, command), capture_output=True, text=True, timeout=120, check=False)


def read_bytes(fleet, path):
    return base64.b64decode(fleet.run(CLIENT, ["base64", "-w0", path], check=True).stdout)


def exists(fleet, path):
    return fleet.run(CLIENT, ["test", "-e", path]).returncode == 0


def nss(fleet, *args):
    return fleet.run(CLIENT, ["certutil", *args, "-d", f"sql:{NSS_DIR}"])


def squash(pem):
    return re.sub(r"\s", "", pem)


def task_output(out, name_start):
    """What ansible-playbook printed under the (first) task whose name starts with name_start."""
    m = re.search(rf"^TASK \[[^\]:]*: {re.escape(name_start)}[^\n]*\n(.*?)(?=^TASK |^PLAY |\Z)", out, re.M | re.S)
    assert m, f"no task {name_start!r} in the output"
    return m.group(1)


def urls(fleet):
    return [f"https://{fleet.host(i).ip}/" for i in SERVERS]


def chromium(fleet, url, home, name):
    """Headless Chromium on the client host as USER with HOME=home: (DOM, stderr, PNG bytes)."""
    profile = fleet.run(CLIENT, ["runuser", "-u", USER, "--", "mktemp", "-d", "/tmp/chromium.XXXXXX"],
                        check=True).stdout.strip()
    shot = f"{profile}/{name}.png"
    proc = fleet.run(CLIENT, ["runuser", "-u", USER, "--", "env", f"HOME={home}", "timeout", "90", CHROMIUM,
                              *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", f"--screenshot={shot}",
                              url], timeout=120)
    png = read_bytes(fleet, shot) if exists(fleet, shot) else b""
    fleet.run(CLIENT, ["rm", "-rf", profile])
    os.makedirs(ARTIFACTS, exist_ok=True)
    if png:
        with open(os.path.join(ARTIFACTS, f"{name}.png"), "wb") as f:
            f.write(png)
    return proc.stdout, proc.stderr, png


def new_nss_home(fleet, with_ca):
    """A fresh HOME for USER whose NSS database is empty or holds only the root CA (trusted, C,,)."""
    home = fleet.run(CLIENT, ["runuser", "-u", USER, "--", "mktemp", "-d", "/tmp/home.XXXXXX"],
                     check=True).stdout.strip()
    if with_ca:
        db = f"sql:{home}/.pki/nssdb"
        script = (f"mkdir -p {home}/.pki/nssdb && certutil -N -d {db} --empty-password && "
                  f"certutil -A -d {db} -n fleet-root -t C,, -a -i {CLIENT_DIR}/ca.pem")
        fleet.run(CLIENT, ["runuser", "-u", USER, "--", "sh", "-c", script], check=True)
    return home


def test_first_run_installs_the_client_and_never_shows_the_password(deployed, fleet, client, backend_vars):
    counts = recap(deployed)
    assert all(c["failed"] == 0 for c in counts.values()), deployed[-4000:]
    assert counts[client.name]["changed"] > 0
    assert SECRET not in deployed
    assert backend_vars.get("mtls_openbao_token", SECRET) not in deployed


def test_the_client_certificate_comes_from_the_backend(deployed, fleet, client, pki, backend_vars):
    """The local store signs with the CA key it holds; OpenBao signs and keeps the record, no CA key in the store."""
    serial = fleet.run(CLIENT, ["openssl", "x509", "-noout", "-serial", "-in", f"{CLIENT_DIR}/cert.pem"],
                       check=True).stdout.strip().split("=")[1].lower()
    ca_keys = sorted(str(p.relative_to(pki)) for p in pki.glob("ca/*/key.pem"))
    if not backend_vars:
        assert ca_keys == ["ca/client-ca/key.pem", "ca/root/key.pem", "ca/server-ca/key.pem"]
        return
    assert ca_keys == []
    serial = ":".join(serial[i:i + 2] for i in range(0, len(serial), 2))
    status, record = call(backend_vars["mtls_openbao_addr"][0], "GET", f"client-ca/cert/{serial}",
                          token=backend_vars["mtls_openbao_token"], ca_cert=backend_vars["mtls_openbao_ca_cert"])
    assert status == 200 and f"CN={client.name}" in subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"], input=record["data"]["certificate"],
        capture_output=True, text=True, check=True).stdout, record


def test_identity_files_are_the_store_files_byte_for_byte_with_owner_and_mode(deployed, fleet, client, pki,
                                                                              key_location):
    store = f"{pki}/certs/{client.name}"
    expected = {"cert.pem": ("cert.pem", "644"), "key.pem": ("key.pem", "600"),
                "fullchain.pem": ("fullchain.pem", "644"), "ca.pem": ("ca.pem", "644"),
                "client.p12": ("bundle.p12", "600")}
    for name, (source, mode) in expected.items():
        path = f"{CLIENT_DIR}/{name}"
        if key_location == "host" and name in ("key.pem", "client.p12"):  # made on the host, never in the store
            assert not os.path.exists(f"{store}/{source}")
        else:
            with open(f"{store}/{source}", "rb") as f:
                assert hashlib.sha256(read_bytes(fleet, path)).digest() == hashlib.sha256(f.read()).digest(), path
        assert fleet.run(CLIENT, ["stat", "-c", "%a %U %G", path]).stdout.split() == [mode, USER, USER], path
    with open(f"{store}/ca.pem", "rb") as f:
        assert read_bytes(fleet, ANCHOR) == f.read()
    assert fleet.run(CLIENT, ["stat", "-c", "%a %U", ANCHOR]).stdout.split() == ["644", "root"]


def test_curl_verifies_the_servers_through_the_system_trust_store(deployed, fleet, client):
    for url in urls(fleet):
        # No -k, no --cacert: the server certificate verifies against the system bundle alone.
        proc = on_client(fleet, f"curl -sS --max-time 10 --cert {CLIENT_DIR}/cert.pem --key {CLIENT_DIR}/key.pem "
                                f"-w '\\n%{{http_code}}' {url}", user=USER)
        assert proc.returncode == 0, proc.stderr
        body, _sep, status = proc.stdout.rpartition("\n")
        assert status == "200", proc.stdout
        page = json.loads(body)
        assert page["client_s_dn"] == f"CN={client.name}" and page["client_verify"] == "SUCCESS"
        proc = on_client(fleet, f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' {url}")
        assert (proc.returncode, proc.stdout) == (0, "400"), proc.stderr  # verified server, no client cert


PYTHON_CLIENT = """
import json, ssl, sys
url, cert, key = sys.argv[1:4]
try:
    import requests
except ImportError:
    import urllib.request
    ctx = ssl.create_default_context()  # the system trust store, no cafile
    ctx.load_cert_chain(cert, key)
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        print(json.dumps({"via": "urllib", "status": r.status, "body": r.read().decode()}))
else:
    r = requests.get(url, cert=(cert, key), timeout=10)
    print(json.dumps({"via": "requests", "status": r.status_code, "body": r.text}))
"""


def test_python_verifies_through_the_system_trust_store_and_presents_the_pair(deployed, fleet, client):
    url = urls(fleet)[0]
    proc = on_client(fleet, f"python3 -c {shlex.quote(PYTHON_CLIENT)} {url} {CLIENT_DIR}/cert.pem "
                            f"{CLIENT_DIR}/key.pem", user=USER)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == 200, result
    assert json.loads(result["body"])["client_s_dn"] == f"CN={client.name}"


def test_modern_bundle_opens_with_openssl(deployed, fleet, client):
    proc = fleet.run(CLIENT, ["env", f"PW={PASSWORD}", "openssl", "pkcs12", "-in", f"{CLIENT_DIR}/client.p12",
                              "-info", "-nodes", "-passin", "env:PW"])
    assert proc.returncode == 0, proc.stderr
    info = proc.stdout + proc.stderr
    assert "PBES2, PBKDF2, AES-256-CBC" in info and "MAC: sha256" in info, info
    assert re.search(rf"subject=CN ?= ?{re.escape(client.name)}$", info, re.M) and "BEGIN PRIVATE KEY" in info


def test_nss_database_holds_the_identity_and_the_trusted_root(deployed, fleet, client):
    listing = nss(fleet, "-L").stdout
    assert re.search(rf"^{re.escape(client.name)}\s+u,u,u\s*$", listing, re.M), listing
    assert re.search(r"^mtls-rollout-root\s+C,,\s*$", listing, re.M), listing
    assert re.search(r"^mtls-rollout-root-intermediate-1\s+,,\s*$", listing, re.M), listing
    assert client.name in nss(fleet, "-K").stdout
    owners = fleet.run(CLIENT, ["stat", "-c", "%U", NSS_DIR, f"{NSS_DIR}/cert9.db", f"{NSS_DIR}/key4.db"]).stdout
    assert owners.split() == [USER] * 3


@pytest.fixture
def auto_select_policy(fleet):
    """Chromium's AutoSelectCertificateForUrls policy for the servers, in the client host's own /etc."""
    rules = [json.dumps({"pattern": f"https://{fleet.host(i).ip}", "filter": {"ISSUER": {"CN": "mtls.rollout Client CA"}}})
             for i in SERVERS]
    text = json.dumps({"AutoSelectCertificateForUrls": rules})
    fleet.run(CLIENT, ["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf %s "$1" > "$0"', POLICY, text], check=True)
    yield
    fleet.run(CLIENT, ["rm", "-f", POLICY], check=True)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="chromium is not installed (apt-get install chromium)")
def test_chromium_presents_the_certificate_from_the_nss_database(deployed, fleet, client, auto_select_policy):
    dom, err, png = chromium(fleet, urls(fleet)[0], f"/home/{USER}", "client-chromium-with-certificate")
    match = re.search(r"<pre[^>]*>(.*?)</pre>", dom, re.S)
    assert match, f"no JSON page in the DOM:\n{dom[:2000]}\n{err[-2000:]}"
    page = json.loads(match.group(1))
    assert page["client_verify"] == "SUCCESS" and page["client_s_dn"] == f"CN={client.name}", page
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="chromium is not installed (apt-get install chromium)")
def test_chromium_without_the_certificate_gets_400_and_without_the_ca_does_not_connect(deployed, fleet):
    url = urls(fleet)[0]
    # A fresh NSS database with only the root CA, no policy: the server verifies, no certificate is sent.
    dom, err = chromium(fleet, url, new_nss_home(fleet, with_ca=True), "client-chromium-without-certificate")[:2]
    assert "400 No required SSL certificate was sent" in dom, dom[:2000] + err[-2000:]
    # An empty NSS database: the server does not verify (no --ignore-certificate-errors anywhere).
    dom, err = chromium(fleet, url, new_nss_home(fleet, with_ca=False), "client-chromium-without-ca")[:2]
    assert "ERR_CERT_AUTHORITY_INVALID" in err, err[-2000:]
    assert "client_s_dn" not in dom


def test_second_run_changes_nothing(deployed, inventory, site_vars):
    out = run_playbook(SITE, inventory, site_vars)[1]
    for host, counts in recap(out).items():
        assert counts["changed"] == 0, f"{host} changed on the second run:\n{out[-4000:]}"


def test_compat_bundle_replaces_the_modern_one_and_opens_with_openssl_legacy_and_keytool(
        deployed, fleet, client, inventory, site_vars, key_location):
    compat = {**site_vars, "mtls_client_pkcs12_encryption": "compat"}
    limit = ("--limit", f"localhost,{client.name}")
    out = run_playbook(SITE, inventory, compat, *limit)[1]
    assert recap(out)[client.name]["changed"] > 0
    assert SECRET not in out
    proc = fleet.run(CLIENT, ["env", f"PW={PASSWORD}", "openssl", "pkcs12", "-legacy", "-in",
                              f"{CLIENT_DIR}/client.p12", "-info", "-nokeys", "-passin", "env:PW"])
    assert proc.returncode == 0, proc.stderr
    info = proc.stdout + proc.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info and "MAC: sha1" in info, info
    proc = fleet.run(CLIENT, ["keytool", "-list", "-v", "-storetype", "PKCS12", "-keystore", f"{CLIENT_DIR}/client.p12",
                              "-storepass", PASSWORD])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PrivateKeyEntry" in proc.stdout and f"CN={client.name}" in proc.stdout
    # Only the bundle changed (the certificate in it did not): the NSS database was left alone.
    bundle_task = "Install the client identity" if key_location == "controller" else "Build the PKCS#12 bundle here"
    assert "changed:" in task_output(out, bundle_task)
    assert "changed:" not in task_output(out, "Import the root CA")
    assert "changed:" not in task_output(out, "Import the client certificate")
    assert re.search(rf"^{re.escape(client.name)}\s+u,u,u\s*$", nss(fleet, "-L").stdout, re.M)


def test_absent_removes_everything_and_a_second_absent_run_changes_nothing(
        deployed, fleet, client, inventory, site_vars, pki):
    absent = {**site_vars, "mtls_client_state": "absent"}
    limit = ("--limit", f"localhost,{client.name}")
    root_pem = squash(open(f"{pki}/certs/{client.name}/ca.pem").read())
    assert root_pem in squash(fleet.run(CLIENT, ["cat", SYSTEM_BUNDLE]).stdout)
    out = run_playbook(SITE, inventory, absent, *limit)[1]
    assert recap(out)[client.name]["changed"] > 0
    for path in ["cert.pem", "key.pem", "fullchain.pem", "ca.pem", "client.p12"]:
        assert not exists(fleet, f"{CLIENT_DIR}/{path}"), path
    assert not exists(fleet, CLIENT_DIR)
    assert not exists(fleet, ANCHOR)
    assert root_pem not in squash(fleet.run(CLIENT, ["cat", SYSTEM_BUNDLE]).stdout)
    listing = nss(fleet, "-L")
    assert listing.returncode == 0 and "mtls-rollout" not in listing.stdout and client.name not in listing.stdout
    assert client.name not in nss(fleet, "-K").stdout
    # The servers no longer verify through the system store (curl exit 60: unknown issuer).
    proc = on_client(fleet, f"curl -sS --max-time 10 -o /dev/null {urls(fleet)[0]}")
    assert proc.returncode == 60, proc.stderr
    out = run_playbook(SITE, inventory, absent, *limit)[1]
    assert recap(out)[client.name]["changed"] == 0, out[-4000:]
