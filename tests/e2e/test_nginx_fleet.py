"""Issue 3 end to end: site.yml on a 4-host fleet (3 nginx servers, 1 client), checked as clients would."""

import json
import re
import socket
import ssl
import subprocess
import time

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs, store
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_ca import ensure_ca
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves

from tests.e2e.helpers import ROOT, curl, curl_until, recap, run_playbook

SITE = "mtls.rollout.site"
SERVERS, CLIENT = [1, 2, 3], 4
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    f = make_module_fleet("ngx", hosts=4, groups={"mtls_servers": SERVERS, "mtls_clients": [CLIENT]})
    # The source goes in as an argument: the checkout may sit under /tmp, which each host has privately.
    with open(f"{ROOT}/tests/e2e/echo_backend.py") as source:
        code = source.read()
    for i in SERVERS:
        f.run(i, ["sh", "-c", 'setsid python3 -c "$0" 127.0.0.1 8080 >/dev/null 2>&1 </dev/null &', code],
              check=True)
    return f


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def site_vars(pki):
    return {"mtls_pki_dir": str(pki), "mtls_nginx_backend": "http://127.0.0.1:8080",
            "mtls_client_identities": [{"name": "client1"}, {"name": "client2"}]}


@pytest.fixture(scope="module")
def deployed(fleet, site_vars):
    """The first site.yml run; returns its output."""
    return run_playbook(SITE, fleet.inventory, site_vars)[1]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A client certificate from a CA the fleet does not trust."""
    s = store.Store(tmp_path_factory.mktemp("foreign"))
    ensure_ca(s, specs.ca_spec("evil-root"))
    ensure_leaves(s, "evil-root", [specs.leaf_spec({"name": "mallory", "profile": "client", "common_name": "mallory"})])
    return s.leaf_path("mallory")


def ident(pki, name):
    return {"cert": f"{pki}/certs/{name}/cert.pem", "key": f"{pki}/certs/{name}/key.pem"}


def root(pki):
    return f"{pki}/ca/root/cert.pem"


def nginx_workers(fleet, i):
    return sorted(fleet.run(i, ["pgrep", "-f", "nginx: worker"]).stdout.split())


def served_chain(ip, port=443, cafile=None):
    """(certificates the server sent, verify result code) from openssl s_client."""
    argv = ["openssl", "s_client", "-connect", f"{ip}:{port}", "-showcerts"]
    if cafile:
        argv += ["-CAfile", cafile, "-verify_return_error"]
    proc = subprocess.run(argv, input="", capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout.count("-----BEGIN CERTIFICATE-----"), proc.stdout


def test_first_run_deploys_every_server(deployed, fleet):
    counts = recap(deployed)
    for i in SERVERS + [CLIENT]:
        assert counts[fleet.host(i).name]["failed"] == 0
        assert counts[fleet.host(i).name]["changed"] > 0


@pytest.mark.parametrize("who", ["client1", "client2"])
def test_known_clients_get_200_and_backend_sees_their_dn(deployed, fleet, pki, who):
    for i in SERVERS:
        status, body = curl(f"https://{fleet.host(i).ip}/", cacert=root(pki), **ident(pki, who))
        assert status == 200, body
        headers = json.loads(body)["headers"]
        assert headers["x-ssl-client-s-dn"] == f"CN={who}"
        assert headers["x-ssl-client-verify"] == "SUCCESS"


def test_no_certificate_gets_400(deployed, fleet, pki):
    for i in SERVERS:
        status, body = curl(f"https://{fleet.host(i).ip}/", cacert=root(pki))
        assert status == 400
        assert "No required SSL certificate was sent" in body


def test_foreign_ca_client_gets_400(deployed, fleet, pki, foreign):
    for i in SERVERS:
        status, body = curl(f"https://{fleet.host(i).ip}/", cacert=root(pki), cert=f"{foreign}/cert.pem",
                            key=f"{foreign}/key.pem")
        assert status == 400
        assert "The SSL certificate error" in body


def test_client_host_uses_its_deployed_identity(deployed, fleet):
    ip = fleet.host(SERVERS[0]).ip
    cmd = (f"curl -sS --max-time 10 --cert /etc/mtls/client/cert.pem --key /etc/mtls/client/key.pem "
           f"--cacert /etc/mtls/client/ca.pem https://{ip}/")
    proc = subprocess.run(fleet.ssh_argv(CLIENT, cmd), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["headers"]["x-ssl-client-s-dn"] == f"CN={fleet.host(CLIENT).name}"
    mode = fleet.run(CLIENT, ["stat", "-c", "%a %U", "/etc/mtls/client/key.pem"]).stdout.split()
    assert mode == ["600", "root"]


def test_server_presents_leaf_and_intermediate_verifying_against_root_alone(deployed, fleet, pki):
    for i in SERVERS:
        count, out = served_chain(fleet.host(i).ip, cafile=root(pki))
        assert count == 2, out  # leaf + server-ca, never the root
        assert "Verify return code: 0 (ok)" in out


def test_access_by_ip_and_by_name_verifies(deployed, fleet, pki):
    ctx = ssl.create_default_context(cafile=root(pki))
    ctx.load_cert_chain(**{"certfile": ident(pki, "client1")["cert"], "keyfile": ident(pki, "client1")["key"]})
    for i in SERVERS:
        host = fleet.host(i)
        for server_hostname in (host.ip, host.name):  # IP in SAN; name in SAN
            with socket.create_connection((host.ip, 443), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        key_mode = fleet.run(i, ["stat", "-c", "%a %U", "/etc/nginx/mtls/key.pem"]).stdout.split()
        assert key_mode == ["400", "root"]


def test_second_run_changes_nothing_and_does_not_reload(deployed, fleet, site_vars):
    before = {i: nginx_workers(fleet, i) for i in SERVERS}
    assert all(before.values())
    out = run_playbook(SITE, fleet.inventory, site_vars)[1]
    for host, counts in recap(out).items():
        assert counts["changed"] == 0, f"{host} changed on the second run:\n{out[-3000:]}"
    assert {i: nginx_workers(fleet, i) for i in SERVERS} == before  # a reload would start new workers


def remote_module_runs(output, ip):
    """Module runs on the host at ``ip`` in -vvv output: with pipelining, one ssh EXEC of its Python each (ending in
    ``&& sleep 0`` up to ansible-core 2.20, bare from 2.21)."""
    return len(re.findall(rf"^<{re.escape(ip)}> SSH: EXEC .*/python3(?: && sleep 0)?'", output, re.M))


def test_second_run_costs_one_module_run_per_server(deployed, fleet, site_vars):
    # issue 16: nginx found installed and running, files as wanted - all in one install_files run, no apt, no service
    out = run_playbook(SITE, fleet.inventory, site_vars, "-vvv")[1]
    assert {i: remote_module_runs(out, fleet.host(i).ip) for i in SERVERS} == {i: 1 for i in SERVERS}


def test_stopped_nginx_is_started_in_that_run(deployed, fleet, pki, site_vars):
    target = fleet.host(SERVERS[0])
    fleet.run(target.name, ["nginx", "-s", "stop"], check=True)
    for _attempt in range(50):
        if curl(f"https://{target.ip}/", cacert=root(pki))[0] == 0:  # nobody listens
            break
        time.sleep(0.1)
    out = run_playbook(SITE, fleet.inventory, site_vars, "--limit", f"localhost,{target.name}")[1]
    assert recap(out)[target.name]["changed"] >= 1, out[-3000:]
    assert curl(f"https://{target.ip}/", cacert=root(pki), **ident(pki, "client1"))[0] == 200
    out = run_playbook(SITE, fleet.inventory, site_vars, "--limit", f"localhost,{target.name}")[1]
    assert recap(out)[target.name]["changed"] == 0


def test_optional_lets_no_certificate_through_as_none(deployed, fleet, pki, site_vars):
    target = fleet.host(SERVERS[0])
    try:
        run_playbook(SITE, fleet.inventory, {**site_vars, "mtls_verify_client": "optional"}, "--limit",
                     f"localhost,{target.name}")
        status, body = curl_until(200, f"https://{target.ip}/", cacert=root(pki))
        assert status == 200, body
        assert json.loads(body)["headers"]["x-ssl-client-verify"] == "NONE"
        status, body = curl(f"https://{target.ip}/", cacert=root(pki), **ident(pki, "client1"))
        assert json.loads(body)["headers"]["x-ssl-client-verify"] == "SUCCESS"
    finally:
        run_playbook(SITE, fleet.inventory, site_vars, "--limit", f"localhost,{target.name}")
    assert curl_until(400, f"https://{target.ip}/", cacert=root(pki))[0] == 400


def test_mismatched_key_is_refused_and_server_keeps_serving(deployed, fleet, pki, site_vars):
    target = fleet.host(SERVERS[1])
    before = served_chain(target.ip)[1]
    rc, out = run_playbook(SITE, fleet.inventory, {**site_vars, "mtls_nginx_key_src": ident(pki, "client1")["key"]},
                           "--limit", f"localhost,{target.name}", check=False)
    assert rc != 0
    assert "private key does not belong to this certificate" in out
    after = served_chain(target.ip)[1]
    assert _leaf(after) == _leaf(before)
    assert curl(f"https://{target.ip}/", cacert=root(pki), **ident(pki, "client1"))[0] == 200


def test_config_rejected_by_nginx_is_rolled_back(deployed, fleet, pki, site_vars):
    target = fleet.host(SERVERS[2])
    conf_before = fleet.run(target.name, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout
    rc, out = run_playbook(SITE, fleet.inventory, {**site_vars, "mtls_nginx_extra_config": "no_such_directive on;",
                                                   "mtls_verify_client": "optional"},
                           "--limit", f"localhost,{target.name}", check=False)
    assert rc != 0
    assert "nginx -t" in out and "no_such_directive" in out
    assert fleet.run(target.name, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout == conf_before
    assert curl(f"https://{target.ip}/", cacert=root(pki))[0] == 400  # still 'on', still serving
    assert curl(f"https://{target.ip}/", cacert=root(pki), **ident(pki, "client1"))[0] == 200


def test_sslyze_finds_mozilla_intermediate_compliance(deployed, fleet, pki):
    ip = fleet.host(SERVERS[0]).ip
    proc = subprocess.run(["sslyze", "--mozilla_config=intermediate", f"--certinfo_ca_file={root(pki)}",
                           f"{ip}:443"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert f"{ip}:443: OK - Compliant." in proc.stdout


def test_three_level_client_hierarchy_needs_the_computed_depth(fleet, tmp_path, site_vars):
    pki = tmp_path / "pki3"
    cas = [{"name": "root", "subject": {"common_name": "Deep Root"}},
           {"name": "server-ca", "issuer": "root"},
           {"name": "int1", "issuer": "root"},
           {"name": "int2", "issuer": "int1", "path_length": 0}]
    deep = {**site_vars, "mtls_pki_dir": str(pki), "mtls_cas": cas, "mtls_client_issuer": "int2"}
    run_playbook(SITE, fleet.inventory, deep)
    target = fleet.host(SERVERS[0])
    conf = fleet.run(target.name, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout
    assert "ssl_verify_depth        2;" in conf
    me = {"cert": f"{pki}/certs/client1/fullchain.pem", "key": f"{pki}/certs/client1/key.pem"}
    status, body = curl(f"https://{target.ip}/", cacert=f"{pki}/ca/root/cert.pem", **me)
    assert status == 200, body
    # nginx's default depth of 1 would reject this client: prove the computed value is what makes it work.
    fleet.run(target.name, ["sed", "-i", "s/ssl_verify_depth .*/ssl_verify_depth 1;/",
                            "/etc/nginx/conf.d/mtls-rollout.conf"], check=True)
    fleet.run(target.name, ["nginx", "-s", "reload"], check=True)
    time.sleep(1)
    assert curl(f"https://{target.ip}/", cacert=f"{pki}/ca/root/cert.pem", **me)[0] == 400


def _leaf(s_client_output):
    start = s_client_output.index("-----BEGIN CERTIFICATE-----")
    return s_client_output[start:s_client_output.index("-----END CERTIFICATE-----")]
