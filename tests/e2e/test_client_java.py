"""Issue 15, item 10: the client role writes a Java truststore (every trusted root) and a keystore (the host's
identity, from its PKCS#12 bundle) with the host's keytool; keytool reads them and a Java 17 HttpClient using
them gets 200 from an nginx server of the fleet. Twice: PKCS12 stores with keys made on the control node, and
JKS stores with keys made on the host (the bundle, and so the keystore, are built there).
Also the client limits docs/clients.md states (item 12): Node.js and pip-installed requests ignore the system
trust store, and key_type ed25519 with mtls_client_nss fails clearly.

Fleet: one nginx server, one client host; two roots in mtls_cas, both trusted by the client.
"""

import hashlib
import json
import os
import re
import ssl
import subprocess

import pytest
import yaml

from tests.e2e.helpers import ROOT, ansible_env, recap, run_playbook

SITE = "mtls.rollout.site"
SERVER, CLIENT = 1, 2
DIR = "/etc/mtls/client"
SECRET = "Tr0ub4dor"
PASSWORD = f"{SECRET} p12'pw"  # a space and a quote: no shell may see it
TRUST_SECRET = "Corr3ctH0rse"
JAVA_CLIENT = os.path.join(ROOT, "tests", "e2e", "java", "MtlsClient.java")  # hosts see /work unchanged
CAS = [{"name": "root", "subject": {"common_name": "mtls.rollout Root CA"}},
       {"name": "root2", "subject": {"common_name": "mtls.rollout Root CA 2"}},
       {"name": "server-ca", "issuer": "root", "path_length": 0},
       {"name": "client-ca", "issuer": "root", "path_length": 0}]
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module", params=[("pkcs12", "controller"), ("jks", "host")], ids=["pkcs12", "jks-hostkey"])
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def fleet(make_module_fleet, variant):
    name = "java" if variant[0] == "pkcs12" else "javaj"
    return make_module_fleet(name, hosts=2, groups={"mtls_servers": [SERVER], "mtls_clients": [CLIENT]})


@pytest.fixture(scope="module")
def site_vars(tmp_path_factory, variant):
    return {"mtls_pki_dir": str(tmp_path_factory.mktemp("pki")), "mtls_nginx_install": False, "mtls_cas": CAS,
            "mtls_key_location": variant[1], "mtls_client_pkcs12_password": PASSWORD,
            "mtls_client_java": True, "mtls_client_java_store_type": variant[0],
            "mtls_client_java_truststore_password": TRUST_SECRET}


@pytest.fixture(scope="module")
def deployed(fleet, site_vars):
    """The first site.yml run, at -vvv (where a leaked password would show)."""
    return run_playbook(SITE, fleet.inventory, site_vars, "-vvv")[1]


def ext(variant):
    return "jks" if variant[0] == "jks" else "p12"


def keytool_list(fleet, path, store_type, password):
    """{alias: (entry type, SHA-256 fingerprint)} of a store, read by keytool on the client host."""
    proc = fleet.run(CLIENT, ["env", f"PW={password}", "keytool", "-list", "-keystore", path,
                              "-storetype", store_type.upper(), "-storepass:env", "PW"], check=True)
    entries = re.findall(r"^([^,\n]+), [^\n]*, (\w+), ?\nCertificate fingerprint \(SHA-256\): ([0-9A-F:]+)",
                         proc.stdout, re.M)
    return {alias: (kind, fp.replace(":", "")) for alias, kind, fp in entries}


def fingerprint(pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()


def java(fleet, url, variant, keystore=True):
    e = ext(variant)
    argv = ["env", f"TRUSTSTORE_PASSWORD={TRUST_SECRET}", f"KEYSTORE_PASSWORD={PASSWORD}", "java", JAVA_CLIENT, url,
            f"{DIR}/truststore.{e}", f"{DIR}/keystore.{e}" if keystore else "-", variant[0].upper()]
    return fleet.run(CLIENT, argv, timeout=120)


def test_first_run_writes_the_stores_and_never_shows_a_password(deployed, fleet):
    counts = recap(deployed)
    assert all(c["failed"] == 0 for c in counts.values()), deployed[-4000:]
    assert SECRET not in deployed and TRUST_SECRET not in deployed


def test_keytool_reads_the_truststore_with_every_trusted_root(deployed, fleet, site_vars, variant):
    entries = keytool_list(fleet, f"{DIR}/truststore.{ext(variant)}", variant[0], TRUST_SECRET)
    wanted = {}
    for name in ("root", "root2"):
        with open(f"{site_vars['mtls_pki_dir']}/ca/{name}/cert.pem") as f:
            wanted[f"mtls-rollout-{name}"] = ("trustedCertEntry", fingerprint(f.read()))
    assert entries == wanted
    mode = fleet.run(CLIENT, ["stat", "-c", "%a", f"{DIR}/truststore.{ext(variant)}"], check=True).stdout.strip()
    assert mode == "644"


def test_keytool_reads_the_keystore_with_the_hosts_identity(deployed, fleet, variant):
    entries = keytool_list(fleet, f"{DIR}/keystore.{ext(variant)}", variant[0], PASSWORD)
    cert = fleet.run(CLIENT, ["cat", f"{DIR}/cert.pem"], check=True).stdout
    assert list(entries.values()) == [("PrivateKeyEntry", fingerprint(cert))]
    mode = fleet.run(CLIENT, ["stat", "-c", "%a", f"{DIR}/keystore.{ext(variant)}"], check=True).stdout.strip()
    assert mode == "600"


def test_java_httpclient_with_the_stores_gets_200(deployed, fleet, variant):
    url = f"https://{fleet.host(SERVER).ip}/"
    proc = java(fleet, url, variant)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status, _sep, body = proc.stdout.partition("\n")
    assert status == "200", proc.stdout
    page = json.loads(body)
    assert (page["client_s_dn"], page["client_verify"]) == (f"CN={fleet.host(CLIENT).name}", "SUCCESS")
    # the same trust without the keystore: the server is verified, nginx refuses the missing certificate
    proc = java(fleet, url, variant, keystore=False)
    assert proc.stdout.partition("\n")[0] == "400", proc.stdout + proc.stderr


def test_second_run_changes_nothing(deployed, fleet, site_vars):
    out = run_playbook(SITE, fleet.inventory, site_vars)[1]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in recap(out).values()), out[-4000:]


def test_a_new_keystore_password_rewrites_only_the_keystore(deployed, fleet, site_vars, variant):
    changed = dict(site_vars, mtls_client_java_keystore_password="An0ther-pass")
    out = run_playbook(SITE, fleet.inventory, changed)[1]
    assert recap(out)[fleet.host(CLIENT).name]["changed"] == 1, out[-4000:]
    assert "PrivateKeyEntry" in str(keytool_list(fleet, f"{DIR}/keystore.{ext(variant)}", variant[0], "An0ther-pass"))
    out = run_playbook(SITE, fleet.inventory, site_vars)[1]  # back, for the tests after this one
    assert recap(out)[fleet.host(CLIENT).name]["changed"] == 1, out[-4000:]


def test_node_and_pip_requests_ignore_the_system_trust_store(deployed, fleet, variant):
    """docs/clients.md: curl verifies through the system store (the root is there), Node.js and a pip-installed
    requests (certifi) do not - until NODE_EXTRA_CA_CERTS / REQUESTS_CA_BUNDLE point at the CA file."""
    if variant[0] != "pkcs12":
        return  # the same on both fleets: checked once
    url = f"https://{fleet.host(SERVER).ip}/"
    node = ("require('https').get(process.argv[1], {cert: fs.readFileSync('%s/cert.pem'), key: fs.readFileSync("
            "'%s/key.pem')}, r => { console.log(r.statusCode); process.exit(0); }).on('error', e => console.log(e.code))" % (DIR, DIR))
    node = "const fs = require('fs'); " + node
    proc = fleet.run(CLIENT, ["node", "-e", node, url], timeout=60)
    assert proc.stdout.strip() == "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", proc.stdout + proc.stderr
    proc = fleet.run(CLIENT, ["env", f"NODE_EXTRA_CA_CERTS={DIR}/ca.pem", "node", "-e", node, url], timeout=60)
    assert proc.stdout.strip() == "200", proc.stdout + proc.stderr
    python = os.path.join(ROOT, ".venv", "bin", "python")  # pip-installed requests and certifi
    script = ("import sys, requests\ntry:\n    print(requests.get(sys.argv[1], cert=(sys.argv[2], sys.argv[3]), "
              "timeout=10).status_code)\nexcept requests.exceptions.SSLError:\n    print('SSLError')")
    argv = [python, "-c", script, url, f"{DIR}/cert.pem", f"{DIR}/key.pem"]
    proc = fleet.run(CLIENT, ["env", "-u", "REQUESTS_CA_BUNDLE", "-u", "CURL_CA_BUNDLE", *argv], timeout=60)
    assert proc.stdout.strip() == "SSLError", proc.stdout + proc.stderr
    proc = fleet.run(CLIENT, ["env", "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt", *argv], timeout=60)
    assert proc.stdout.strip() == "200", proc.stdout + proc.stderr


def role_alone(tmp_path, host_vars, role_vars):
    """The client role alone on localhost (connection local): (returncode, output)."""
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local", "vars": host_vars,
             "roles": [dict(role_vars, role="mtls.rollout.client", mtls_client_dir=str(tmp_path / "client"))]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", str(tmp_path / "play.yml")], capture_output=True,
                          text=True, env=ansible_env(), cwd=ROOT, timeout=300, check=False)
    assert not (tmp_path / "client").exists()  # refused before anything was done
    return proc.returncode, proc.stdout


def test_ed25519_with_nss_fails_clearly_before_anything_is_done(tmp_path):
    """NSS cannot import an Ed25519 key: the role says so at once (pk12util would fail later otherwise)."""
    rc, out = role_alone(tmp_path, {"mtls_client_certificate": {"key_type": "ed25519"}},  # as host_vars set it
                         {"mtls_client_nss": True, "mtls_client_pkcs12_password": PASSWORD})
    assert rc != 0 and "key_type ed25519 cannot be combined with mtls_client_nss" in out, out


@pytest.mark.parametrize("password", ["", "pässwörd-1"], ids=["empty", "non-ascii"])
def test_java_refuses_passwords_java_cannot_use(tmp_path, password):
    """Java reads a password-less bundle as an empty keystore and refuses non-ASCII passwords."""
    rc, out = role_alone(tmp_path, {}, {"mtls_client_java": True, "mtls_client_pkcs12_password": password})
    assert rc != 0, out
    assert "mtls_client_java imports the PKCS#12 bundle" in out and "printable ASCII" in out, out
    assert password not in out or not password
