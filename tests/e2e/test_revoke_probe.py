"""Issue 6 end to end: revocation (revoke.yml, ssl_crl), the probe's diagnoses and verify.yml, on a 3-host
fleet (2 nginx servers with CRLs on, 1 client host). Each failure the probe names is caused on purpose."""

import datetime as dt
import json
import re
import subprocess
import time

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import crl, specs, store
from ansible_collections.mtls.rollout.plugins.module_utils.probe import connect
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_ca import ensure_ca
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves

from tests.e2e.helpers import ansible_env, curl, recap, run_playbook

SERVERS, CLIENT = [1, 2], 3
PAST = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    return make_module_fleet("rvk", hosts=3, groups={"mtls_servers": SERVERS, "mtls_clients": [CLIENT]})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The store, its CAs made 30 days ago (as the pki role's defaults would make them), so certificates can be
    issued in the past - an expired client of a trusted CA."""
    path = tmp_path_factory.mktemp("pki")
    s = store.Store(str(path))
    ensure_ca(s, specs.ca_spec("root", {"common_name": "mtls.rollout Root CA"}), now=PAST)
    for name, cn in (("server-ca", "Server"), ("client-ca", "Client")):
        ensure_ca(s, specs.ca_spec(name, {"common_name": f"mtls.rollout {cn} CA"}, "root", path_length=0), now=PAST)
    return path


@pytest.fixture(scope="module")
def site_vars(pki):
    return {"mtls_pki_dir": str(pki), "mtls_nginx_crl": True,
            "mtls_client_identities": [{"name": "client1"}, {"name": "client2"}]}


@pytest.fixture(scope="module")
def deployed(fleet, site_vars):
    return run_playbook("mtls.rollout.site", fleet.inventory, site_vars)[1]


@pytest.fixture(scope="module")
def revoked(deployed, fleet, site_vars):
    """revoke.yml -e mtls_revoke=client2, run twice; returns both outputs."""
    first = run_playbook("mtls.rollout.revoke", fleet.inventory, {**site_vars, "mtls_revoke": "client2"})[1]
    second = run_playbook("mtls.rollout.revoke", fleet.inventory, {**site_vars, "mtls_revoke": "client2"})[1]
    return first, second


@pytest.fixture(scope="module")
def extra(pki, deployed):
    """Identities the fleet's config would never produce, made with the engine in the same store."""
    s = store.Store(str(pki))
    now = dt.datetime.now(dt.timezone.utc)
    ensure_leaves(s, "client-ca", [specs.leaf_spec({"name": "expired", "profile": "client", "common_name": "expired",
                                                    "valid_days": 1})], now=now - dt.timedelta(days=10))
    ensure_leaves(s, "client-ca", [specs.leaf_spec({"name": "svc", "profile": "server", "dns": ["svc.example"]})])
    ensure_ca(s, specs.ca_spec("int1", None, "root"), now=PAST)
    ensure_ca(s, specs.ca_spec("int2", None, "int1", path_length=0), now=PAST)
    ensure_leaves(s, "int2", [specs.leaf_spec({"name": "deep", "profile": "client", "common_name": "deep"})])
    crl.revoke(s, cas=["int2"], include_parents=True)
    foreign = store.Store(str(pki) + "-foreign")
    ensure_ca(foreign, specs.ca_spec("evil-root"))
    ensure_leaves(foreign, "evil-root", [specs.leaf_spec({"name": "mallory", "profile": "client",
                                                          "common_name": "mallory"})])
    return {"store": s, "foreign": foreign}


def ident(pki, name, full=True):
    return {"client_cert": f"{pki}/certs/{name}/{'fullchain' if full else 'cert'}.pem",
            "client_key": f"{pki}/certs/{name}/key.pem"}


def root(pki):
    return f"{pki}/ca/root/cert.pem"


def run_probe(fleet, i, pki, host=None, **kw):
    obs = connect.observe(host or fleet.host(i).ip, 443, ca_file=root(pki), timeout=10, **kw)
    return connect.report(obs)


def codes(result):
    return [d["code"] for d in result["diagnosis"]]


def reload(fleet, i):
    fleet.run(i, ["nginx", "-t"], check=True)
    fleet.run(i, ["nginx", "-s", "reload"], check=True)
    time.sleep(1)


def test_site_publishes_the_crl_of_every_ca_level(deployed, fleet, pki, site_vars):
    for name in ("root", "server-ca", "client-ca"):
        assert (pki / "ca" / name / "crl.pem").exists()
    assert "Revoke certificates and refresh the CRL of every CA" in deployed
    for i in SERVERS:
        conf = fleet.run(i, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout
        assert re.search(r"ssl_crl\s+/etc/nginx/mtls/crl.pem;", conf)
        published = fleet.run(i, ["cat", "/etc/nginx/mtls/crl.pem"]).stdout
        assert published.count("-----BEGIN X509 CRL-----") == 2  # client-ca and root
        for who in ("client1", "client2"):
            status, body = curl(f"https://{fleet.host(i).ip}/", cert=f"{pki}/certs/{who}/cert.pem",
                                key=f"{pki}/certs/{who}/key.pem", cacert=root(pki))
            assert status == 200, body


def test_probe_reports_what_a_healthy_server_presents(deployed, fleet, pki):
    result = run_probe(fleet, 1, pki, server_name=fleet.host(1).name, expect_names=[fleet.host(1).ip],
                       expect_client_auth=True, **ident(pki, "client1"))
    assert result["ok"], result["diagnosis"]
    assert result["http_status"] == 200 and result["protocol"] in ("TLSv1.2", "TLSv1.3") and result["cipher"]
    assert result["certificate_count"] == 2 and result["verified"] is True
    assert [c["subject"] for c in result["certificates"]] == [f"CN={fleet.host(1).name}", "CN=mtls.rollout Server CA"]
    assert result["certificates"][0]["issuer"] == "CN=mtls.rollout Server CA"
    assert result["client_auth_requested"] is True
    assert result["acceptable_ca_names"] == ["CN=mtls.rollout Client CA", "CN=mtls.rollout Root CA"]
    tls12 = subprocess.run(["openssl", "s_client", "-connect", f"{fleet.host(1).ip}:443", "-tls1_2"], input="",
                           capture_output=True, text=True, timeout=30, check=False).stdout
    assert "Acceptable client certificate CA names" in tls12  # what the probe read, seen by openssl too
    anonymous = run_probe(fleet, 1, pki)
    assert codes(anonymous) == ["client_certificate_required"] and anonymous["http_status"] == 400


def test_verify_passes_on_a_healthy_fleet(deployed, fleet, site_vars):
    rc, out = run_playbook("mtls.rollout.verify", fleet.inventory, site_vars, check=False)
    assert rc == 0, out[-4000:]
    assert "all 4 probes passed" in out  # control node -> 2 servers, client host -> 2 servers
    client = fleet.host(CLIENT).name
    for i in SERVERS:
        assert re.search(rf"{client} -> {fleet.host(i).name} \(\S+\): HTTP 200, TLSv1\.[23]: OK", out), out[-3000:]
        assert re.search(rf"control node -> {fleet.host(i).name} \(\S+\): HTTP 400, TLSv1\.[23], 2 server "
                         rf"certificate\(s\): OK", out)


def test_revoked_client_is_refused_everywhere_and_others_still_served(revoked, fleet, pki):
    first = revoked[0]
    assert "client2" in first and "revoked" in first
    for i in SERVERS:
        ip = fleet.host(i).ip
        status, body = curl(f"https://{ip}/", cert=f"{pki}/certs/client2/cert.pem", key=f"{pki}/certs/client2/key.pem",
                            cacert=root(pki))
        assert status == 400 and "The SSL certificate error" in body
        assert curl(f"https://{ip}/", cert=f"{pki}/certs/client1/cert.pem", key=f"{pki}/certs/client1/key.pem",
                    cacert=root(pki))[0] == 200
        cmd = (f"curl -sS -o /dev/null -w '%{{http_code}}' --cert /etc/mtls/client/cert.pem "
               f"--key /etc/mtls/client/key.pem --cacert /etc/mtls/client/ca.pem https://{ip}/")
        assert subprocess.run(fleet.ssh_argv(CLIENT, cmd), capture_output=True, text=True, timeout=60, check=False).stdout == "200"
    index = json.loads((pki / "index.json").read_text())
    [rec] = [r for r in index["issued"] if r["name"] == "client2"]
    assert rec["status"] == "revoked" and rec["revoked_at"]


def test_second_revoke_changes_nothing(revoked, fleet):
    second = revoked[1]
    counts = recap(second)
    assert counts and all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), second[-3000:]
    assert "already_revoked" in second


def test_probe_names_the_revoked_client(revoked, fleet, pki):
    for i in SERVERS:
        result = run_probe(fleet, i, pki, revoked_serials=connect.revoked_from_index(str(pki)),
                           **ident(pki, "client2"))
        assert result["http_status"] == 400 and codes(result) == ["client_revoked"], result["diagnosis"]
    # the module itself, by FQCN, on the control node, with the CRL files instead of the index
    args = (f"host={fleet.host(1).ip} ca_file={root(pki)} client_cert={pki}/certs/client2/fullchain.pem "
            f"client_key={pki}/certs/client2/key.pem crl_files={pki}/ca/client-ca/crl.pem,{pki}/ca/root/crl.pem")
    proc = subprocess.run(["ansible", "localhost", "-m", "mtls.rollout.probe", "-a", args],
                          capture_output=True, text=True, env=ansible_env(), timeout=120, check=False)
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert codes(result) == ["client_revoked"] and "on the CRL of CN=mtls.rollout Client CA" in \
        result["diagnosis"][0]["message"]


def test_probe_names_a_client_from_a_foreign_ca(extra, fleet, pki):
    foreign = extra["foreign"]
    result = run_probe(fleet, 1, pki, client_cert=foreign.leaf_path("mallory", "cert.pem"),
                       client_key=foreign.leaf_path("mallory", "key.pem"))
    assert result["http_status"] == 400 and codes(result) == ["client_ca_not_accepted"]
    assert "CN=evil-root" in result["diagnosis"][0]["message"]


def test_probe_names_an_expired_client(extra, fleet, pki):
    result = run_probe(fleet, 1, pki, **ident(pki, "expired"))
    assert result["http_status"] == 400 and codes(result) == ["client_expired"]


def test_probe_names_a_server_certificate_used_as_client(extra, fleet, pki):
    result = run_probe(fleet, 1, pki, **ident(pki, "svc"))  # server profile, from the accepted client CA
    assert result["http_status"] == 400 and codes(result) == ["client_wrong_purpose"]
    # A real server certificate. Sent alone, its CA is not accepted and its purpose is wrong; sent with server-ca,
    # it chains to the root that client-ca.pem holds, so only its missing clientAuth stops it.
    server = f"{fleet.host(2).name}-server"
    alone = run_probe(fleet, 1, pki, **ident(pki, server, full=False))
    assert codes(alone) == ["client_ca_not_accepted", "client_wrong_purpose"]
    assert codes(run_probe(fleet, 1, pki, **ident(pki, server))) == ["client_wrong_purpose"]


def test_probe_names_a_chain_deeper_than_the_verify_depth(extra, fleet, pki):
    i = SERVERS[1]
    s = extra["store"]
    conf, bundle, crls = "/etc/nginx/conf.d/mtls-rollout.conf", "/etc/nginx/mtls/client-ca.pem", "/etc/nginx/mtls/crl.pem"
    more_cas = (s.read(s.ca_path("int2", "cert.pem")) + s.read(s.ca_path("int1", "cert.pem"))).decode()
    more_crls = (s.read(s.ca_path("int2", "crl.pem")) + s.read(s.ca_path("int1", "crl.pem"))).decode()
    fleet.run(i, ["sh", "-c", f'for f in {conf} {bundle} {crls}; do cp -p "$f" "$f.orig"; done'], check=True)
    try:
        fleet.run(i, ["sh", "-c", f'printf "%s" "$0" >> {bundle}; printf "%s" "$1" >> {crls}; '
                                  f'sed -i "s/ssl_verify_depth .*/ssl_verify_depth 2;/" {conf}', more_cas, more_crls],
                  check=True)
        reload(fleet, i)
        ok = run_probe(fleet, i, pki, **ident(pki, "deep"))
        assert ok["http_status"] == 200 and ok["ok"] and ok["client_chain_depth"] == 2, ok["diagnosis"]
        fleet.run(i, ["sed", "-i", "s/ssl_verify_depth .*/ssl_verify_depth 1;/", conf], check=True)
        reload(fleet, i)
        result = run_probe(fleet, i, pki, **ident(pki, "deep"))
        assert result["http_status"] == 400 and codes(result) == ["client_chain_too_deep"], result["diagnosis"]
        assert "at least 2" in result["diagnosis"][0]["message"]
    finally:
        fleet.run(i, ["sh", "-c", f'for f in {conf} {bundle} {crls}; do mv "$f.orig" "$f"; done'], check=True)
        reload(fleet, i)


def test_probe_names_an_address_and_a_name_not_in_the_san(deployed, fleet, pki):
    i = SERVERS[0]
    extra_ip = re.sub(r"\.\d+$", ".200", fleet.host(i).ip)
    fleet.run(i, ["ip", "addr", "add", f"{extra_ip}/24", "dev", "eth0"], check=True)
    try:
        result = run_probe(fleet, i, pki, host=extra_ip, **ident(pki, "client1"))
        assert result["http_status"] == 200 and codes(result) == ["ip_not_in_san"]
        assert extra_ip in result["diagnosis"][0]["message"] and fleet.host(i).ip in result["diagnosis"][0]["message"]
    finally:
        fleet.run(i, ["ip", "addr", "del", f"{extra_ip}/24", "dev", "eth0"])
    result = run_probe(fleet, i, pki, server_name="www.not-listed.example", **ident(pki, "client1"))
    assert codes(result) == ["name_not_in_san"]


def test_probe_and_verify_name_a_server_that_sends_only_its_leaf(deployed, fleet, pki, site_vars):
    i = SERVERS[1]
    chain, client_chain = "/etc/nginx/mtls/fullchain.pem", "/etc/mtls/client/fullchain.pem"
    fleet.run(i, ["sh", "-c", f"cp -p {chain} {chain}.orig && openssl x509 -in {chain}.orig -out {chain}"], check=True)
    fleet.run(CLIENT, ["mv", client_chain, f"{client_chain}.off"], check=True)  # and a client that cannot probe
    try:
        reload(fleet, i)
        result = run_probe(fleet, i, pki, **ident(pki, "client1"))
        assert result["certificate_count"] == 1 and result["verify_code"] == 20
        assert codes(result) == ["server_missing_intermediate"]
        rc, out = run_playbook("mtls.rollout.verify", fleet.inventory, site_vars, check=False)
        assert rc != 0
        broken, healthy, client = fleet.host(i).name, fleet.host(SERVERS[0]).name, fleet.host(CLIENT).name
        assert re.search(rf"control node -> {broken} \(\S+\):.*FAILED - the server sends only its own certificate",
                         out), out[-4000:]
        assert re.search(rf"control node -> {healthy} \(\S+\):.*: OK", out)
        assert re.search(rf"{client} -> {healthy} \(\S+\): HTTP -: FAILED - cannot read {client_chain}", out)
        assert "3 of 4 probes found problems" in out  # all but control node -> the healthy server
    finally:
        fleet.run(CLIENT, ["mv", f"{client_chain}.off", client_chain], check=True)
        fleet.run(i, ["mv", f"{chain}.orig", chain], check=True)
        reload(fleet, i)
    assert codes(run_probe(fleet, i, pki, **ident(pki, "client1"))) == []
