"""Issue 14, item 1: a client host trusts several roots at once (system trust store, NSS database, ca.pem), and
withdrawing one is a normal idempotent run. Fleet: one nginx server, one client host."""

import re
import subprocess

import pytest

from tests.e2e.helpers import ca_pem as store_ca_pem, changed_tasks, recap, run_playbook, squash

SITE = "mtls.rollout.site"
SERVER, CLIENT = 1, 2
ANCHORS = "/usr/local/share/ca-certificates"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
NSS = "sql:/root/.pki/nssdb"
CAS = [{"name": "root", "subject": {"common_name": "mtls.rollout Root CA"}},
       {"name": "root2", "subject": {"common_name": "mtls.rollout Root CA 2"}},
       {"name": "server-ca", "issuer": "root", "path_length": 0},
       {"name": "client-ca", "issuer": "root", "path_length": 0}]
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    return make_module_fleet("trust", hosts=2, groups={"mtls_servers": [SERVER], "mtls_clients": [CLIENT]})


@pytest.fixture(scope="module")
def site_vars(tmp_path_factory):
    return {"mtls_pki_dir": str(tmp_path_factory.mktemp("pki")), "mtls_nginx_install": False, "mtls_cas": CAS,
            "mtls_client_nss": True, "mtls_client_pkcs12_password": "pw"}


@pytest.fixture(scope="module")
def both(fleet, site_vars):
    return run_playbook(SITE, fleet.inventory, site_vars)[1]


def root_pem(site_vars, name):
    return store_ca_pem(site_vars["mtls_pki_dir"], name)


def trusted(fleet, site_vars):
    """{root name: (anchor file, in the system bundle, in ca.pem, trusted in NSS)} on the client host."""
    bundle = squash(fleet.run(CLIENT, ["cat", BUNDLE]).stdout)
    ca_pem = squash(fleet.run(CLIENT, ["cat", "/etc/mtls/client/ca.pem"]).stdout)
    nss = fleet.run(CLIENT, ["certutil", "-L", "-d", NSS]).stdout
    out = {}
    for name in ("root", "root2"):
        pem = squash(root_pem(site_vars, name))
        anchor = fleet.run(CLIENT, ["test", "-e", f"{ANCHORS}/mtls-rollout-{name}.crt"]).returncode == 0
        out[name] = (anchor, pem in bundle, pem in ca_pem,
                     bool(re.search(rf"^mtls-rollout-{name}\s+C,,\s*$", nss, re.M)))
    return out


def test_every_root_of_mtls_cas_is_trusted_everywhere(both, fleet, site_vars):
    assert all(c["failed"] == 0 for c in recap(both).values())
    assert trusted(fleet, site_vars) == {"root": (True,) * 4, "root2": (True,) * 4}
    ip = fleet.host(SERVER).ip  # the client verifies the server through the system store holding both roots
    proc = fleet.run(CLIENT, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cert",
                              "/etc/mtls/client/cert.pem", "--key", "/etc/mtls/client/key.pem", f"https://{ip}/"])
    assert proc.stdout == "200", proc.stderr


def test_second_run_changes_nothing(both, fleet, site_vars):
    out = run_playbook(SITE, fleet.inventory, site_vars)[1]
    name = fleet.host(CLIENT).name
    assert recap(out)[name]["changed"] == 0, changed_tasks(out, name)


def test_withdrawing_a_root_removes_it_everywhere_and_settles(both, fleet, site_vars):
    withdrawn = {**site_vars, "mtls_client_trusted_roots": ["root"]}
    out = run_playbook(SITE, fleet.inventory, withdrawn)[1]
    name = fleet.host(CLIENT).name
    assert recap(out)[name]["changed"] > 0
    assert trusted(fleet, site_vars) == {"root": (True,) * 4, "root2": (False,) * 4}
    out = run_playbook(SITE, fleet.inventory, withdrawn)[1]
    assert recap(out)[name]["changed"] == 0, changed_tasks(out, name)


def test_a_server_under_the_new_root_serves_the_cross_and_verifies_for_old_only_clients(both, fleet, site_vars):
    pki = site_vars["mtls_pki_dir"]
    cas = CAS + [{"name": "server-ca-2", "issuer": "root2", "path_length": 0}]
    cas[1] = dict(cas[1], cross_signed_by=["root"])  # root2's key certified by root too
    rotated = {**site_vars, "mtls_cas": cas, "mtls_server_issuer": "server-ca-2",
               "mtls_nginx_chain_extra": [f"{pki}/ca/root2/cross-root.pem"]}
    run_playbook(SITE, fleet.inventory, rotated)
    ip = fleet.host(SERVER).ip
    for anchor in ("root", "root2"):  # a client that trusts only the old root, and one that trusts only the new
        proc = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:443", "-CAfile", f"{pki}/ca/{anchor}/cert.pem",
                               "-verify_ip", ip, "-verify_return_error", "-showcerts"],
                              input="", capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0 and "Verify return code: 0 (ok)" in proc.stdout, (anchor, proc.stdout[-1500:])
        assert proc.stdout.count("BEGIN CERTIFICATE") == 3  # leaf, server-ca-2, cross
    out = run_playbook(SITE, fleet.inventory, rotated)[1]
    assert recap(out)["localhost"]["changed"] == 0 and recap(out)[fleet.host(SERVER).name]["changed"] == 0
