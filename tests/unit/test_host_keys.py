"""Keys made on hosts (key_location host): the engine signs a CSR's public key under the inventory's spec,
never what the CSR asks for, and decides renewal from what the host reports with the same reasons."""

import ipaddress
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.mtls.rollout.plugins.module_utils.pki import csr, keys, pem, specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from pkitest import DAY, assert_item_refused, assert_refused, issue, make_ca, snapshot, utcnow

NOW = utcnow()
WEB = {"name": "web", "common_name": "web.example.com", "ip": ["10.0.0.1"], "key_location": "host"}
ALICE = {"name": "alice", "profile": "client", "common_name": "alice", "key_location": "host",
         "pkcs12": {"password": "pw"}}


def make_csr(key, cn="ignored", dns=(), ca=False, eku=None):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address("203.0.113.9"))]), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    algo = None if keys.spec_of(key).type == "ed25519" else hashes.SHA256()
    return builder.sign(key, algo).public_bytes(serialization.Encoding.PEM)


class Host:
    """A host that keeps its key: reports its CSR and the certificate it holds."""

    def __init__(self, spec="ec"):
        self.key = keys.generate(keys.key_spec(spec))
        self.held = None
        self.next_key = None

    def report(self, name):
        key = self.next_key or self.key
        return csr.host_report(name, make_csr(key), self.held, rotating=self.next_key is not None)

    def install(self, store, name):
        with open(store.leaf_path(name, "fullchain.pem"), "rb") as f:
            self.held = f.read()
        if self.next_key is not None:
            self.key, self.next_key = self.next_key, None


def run(store, items, hosts, **kw):
    leaf_specs = [specs.leaf_spec(i) for i in items]
    reports = {i["name"]: hosts[i["name"]].report(i["name"]) for i in items if i.get("key_location") == "host"}
    return {r["name"]: r for r in ensure_leaves(store, "int", leaf_specs, reports=reports, now=kw.pop("now", NOW),
                                                **kw)}


@pytest.fixture
def hosts():
    return {"web": Host(), "alice": Host()}


@pytest.fixture
def deployed(pki, hosts):
    run(pki, [WEB, ALICE], hosts)
    for name in hosts:
        hosts[name].install(pki, name)
    return pki


def test_signs_the_csr_key_and_keeps_no_key_or_bundle(pki, hosts):
    results = run(pki, [WEB, ALICE], hosts)
    for name in ("web", "alice"):
        assert results[name]["action"] == "issued" and results[name]["key_location"] == "host"
        cert = x509.load_pem_x509_certificate(open(pki.leaf_path(name, "cert.pem"), "rb").read())
        assert keys.public_der(cert.public_key()) == keys.public_der(hosts[name].key)
        assert not os.path.exists(pki.leaf_path(name, "key.pem"))
        assert not os.path.exists(pki.leaf_path(name, "bundle.p12"))  # built on the host from its own key
        assert "key" not in results[name]["paths"] and "pkcs12" not in results[name]["paths"]
        assert os.path.exists(pki.leaf_path(name, "fullchain.pem"))
    record = pki.load_index().current("leaf", "web")
    assert record["key_location"] == "host" and record["serial"] == results["web"]["serial"]


def test_the_inventory_decides_what_is_certified_not_the_csr(pki):
    key = keys.generate(keys.key_spec("ec"))
    greedy = make_csr(key, cn="admin", dns=["evil.example.org", "*.example.com"], ca=True,
                      eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING])
    spec = specs.leaf_spec(dict(ALICE, pkcs12=None))
    ensure_leaves(pki, "int", [spec], reports={"alice": csr.host_report("alice", greedy)}, now=NOW)
    cert = x509.load_pem_x509_certificate(open(pki.leaf_path("alice", "cert.pem"), "rb").read())
    assert cert.subject.rfc4514_string() == "CN=alice"
    assert pem.san(cert) == set()
    assert pem.ekus(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pem.is_ca(cert) is False
    assert keys.public_der(cert.public_key()) == keys.public_der(key)


def _bad_signature(csr_pem):
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x55  # inside the signature value
    request = x509.load_der_x509_csr(bytes(der))
    return request.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("bad, needle", [
    (lambda k: _bad_signature(make_csr(k)), "signature that does not verify"),
    (lambda k: b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n", "not a readable"),
    (lambda k: b"", "no CSR"),
])
def test_unusable_csr_is_refused_naming_the_certificate(pki, bad, needle):
    data = bad(keys.generate(keys.key_spec("ec")))
    assert_refused(pki, lambda: ensure_leaves(pki, "int", [specs.leaf_spec(WEB)],
                                              reports={"web": csr.host_report("web", data)}, now=NOW),
                   needle, "'web'")


def test_missing_report_is_refused(pki):
    assert_item_refused(pki, lambda: ensure_leaves(pki, "int", [specs.leaf_spec(WEB)], now=NOW), "web", "no report",
                        "'web'", code="no_csr")


def test_second_run_from_the_host_report_is_unchanged(deployed, hosts):
    before = snapshot(deployed.root)
    results = run(deployed, [WEB, ALICE], hosts)
    assert {r["action"] for r in results.values()} == {"unchanged"}
    assert snapshot(deployed.root) == before


@pytest.mark.parametrize("change, item, expected", [
    ("host lost its certificate", {}, None),
    ("other key on host", {}, "key_mismatch"),
    ("rotation", {}, "key_rotation"),
    ("dns", {"dns": ["www.example.com"]}, "spec_changed: dns"),
    ("forced", {"force": True}, "forced"),
])
def test_renewal_reasons_from_what_the_host_reports(deployed, hosts, change, item, expected):
    host = hosts["web"]
    old_serial = deployed.load_index().current("leaf", "web")["serial"]
    if change == "host lost its certificate":
        host.held = None
    elif change == "other key on host":
        host.key = keys.generate(keys.key_spec("ec"))
    elif change == "rotation":
        host.next_key = keys.generate(keys.key_spec("ec"))
    result = run(deployed, [dict(WEB, **item)], hosts)["web"]
    if expected is None:  # the store's certificate for this key is deployed again, not issued again
        assert result["action"] == "updated" and result["serial"] == old_serial
        return
    assert expected in result["reasons"], result["reasons"]
    assert result["action"] == "renewed" and result["serial"] != old_serial
    cert = x509.load_pem_x509_certificate(open(deployed.leaf_path("web", "cert.pem"), "rb").read())
    assert keys.public_der(cert.public_key()) == keys.public_der(host.next_key or host.key)


def test_due_is_decided_from_the_held_certificate(deployed, hosts):
    result = run(deployed, [WEB], hosts, now=NOW + 300 * DAY)["web"]
    assert result["action"] == "renewed" and result["reasons"][0].startswith("due:")


def test_check_mode_reports_what_would_be_signed_and_writes_nothing(deployed, hosts):
    hosts["web"].next_key = keys.generate(keys.key_spec("ec"))
    before = snapshot(deployed.root)
    result = run(deployed, [WEB], hosts, check=True)["web"]
    assert result["changed"] and result["reasons"] == ["key_rotation"] and "serial" not in result
    assert snapshot(deployed.root) == before


def test_switch_from_controller_key_reissues_and_drops_the_pushed_key(pki, hosts):
    issue(pki, "int", [dict(ALICE, key_location="controller")], now=NOW)
    assert os.path.exists(pki.leaf_path("alice", "key.pem")) and os.path.exists(pki.leaf_path("alice", "bundle.p12"))
    with open(pki.leaf_path("alice", "fullchain.pem"), "rb") as f:
        hosts["alice"].held = f.read()  # what the controller pushed
    result = run(pki, [ALICE], hosts)["alice"]
    assert "key_location_changed" in result["reasons"] and result["action"] == "renewed"
    assert not os.path.exists(pki.leaf_path("alice", "key.pem"))
    assert not os.path.exists(pki.leaf_path("alice", "bundle.p12"))
    assert "alice" not in pki.load_index().bundles


def test_the_pushed_controller_key_is_never_certified_as_a_host_key(pki):
    issue(pki, "int", [dict(WEB, key_location="controller")], now=NOW)
    pushed = keys.from_pem(open(pki.leaf_path("web", "key.pem"), "rb").read(), "key.pem")
    report = csr.host_report("web", make_csr(pushed))
    assert_item_refused(pki, lambda: ensure_leaves(pki, "int", [specs.leaf_spec(WEB)], reports={"web": report},
                                                   now=NOW), "web", "has travelled", code="key_location_changed")


def test_key_type_other_than_the_inventory_is_refused(pki):
    report = csr.host_report("web", make_csr(keys.generate(keys.key_spec("rsa", 2048))))
    assert_item_refused(pki, lambda: ensure_leaves(pki, "int", [specs.leaf_spec(WEB)], reports={"web": report},
                                                   now=NOW), "web", "rsa 2048", "ec P-256", code="key_type")


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_other_key_types(pki, kind):
    host = Host(kind)
    item = dict(WEB, key_type=kind, key_size=3072 if kind == "rsa" else None)
    result = run(pki, [item], {"web": host})["web"]
    assert result["action"] == "issued"


def test_unreadable_held_certificate_means_reissue(deployed, hosts):
    hosts["web"].held = b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"
    hosts["web"].key = keys.generate(keys.key_spec("ec"))  # so the stored certificate does not fit either
    result = run(deployed, [WEB], hosts)["web"]
    assert result["reasons"][0] == "unreadable" and result["action"] == "renewed"


def test_leaf_is_clipped_to_its_issuer(store):
    make_ca(store, "root")
    make_ca(store, "int", "root", valid_days=30)
    results = run(store, [dict(WEB, valid_days=365)], {"web": Host()})
    assert results["web"]["warnings"] and "clipped" in results["web"]["warnings"][0]


def test_a_host_key_that_is_another_leafs_key_is_refused(deployed, hosts):
    """A cloned host (or a copied key file): the same key offered for a second certificate."""
    clone = Host()
    clone.key = hosts["web"].key
    item = dict(WEB, name="web2", common_name="web2.example.com")
    assert_item_refused(deployed, lambda: run(deployed, [item], {"web2": clone}), "web2", "'web2'", "'web'",
                        "cloned host", code="key_reused")


def test_two_cloned_hosts_offering_one_key_in_the_same_run_are_refused(pki):
    first, clone = Host(), Host()
    clone.key = first.key
    items = [WEB, dict(WEB, name="web2", common_name="web2.example.com")]
    results = assert_item_refused(pki, lambda: run(pki, items, {"web": first, "web2": clone}), "web2", "'web2'",
                                  "'web'", code="key_reused")
    assert results["web"]["action"] == "issued" and "failed" not in results["web"]


def test_a_refused_host_report_fails_its_item_only(deployed, hosts):
    """One host sends a key of another type, one a CSR that did not verify (the module passes the PkiError):
    those two items fail, nothing of them is written, and the other items are renewed or left alone as usual."""
    odd = Host("rsa")
    bad = pytest.raises(PkiError, csr.host_report, "bad", b"").value
    items = [dict(WEB, force=True), ALICE, dict(WEB, name="odd", common_name="odd.example.com"),
             dict(WEB, name="bad", common_name="bad.example.com")]
    leaf_specs = [specs.leaf_spec(i) for i in items]
    reports = {"web": hosts["web"].report("web"), "alice": hosts["alice"].report("alice"),
               "odd": odd.report("odd"), "bad": bad}
    results = assert_item_refused(deployed, lambda: ensure_leaves(deployed, "int", leaf_specs, reports=reports,
                                                                  now=NOW), "odd", "'odd'", "rsa", code="key_type")
    assert results["bad"]["failed"] and results["bad"]["code"] == "no_csr" and "'bad'" in results["bad"]["msg"]
    assert not os.path.exists(deployed.leaf_path("bad", ""))
    assert results["web"]["action"] == "renewed" and results["alice"]["action"] == "unchanged"
    assert [r["name"] for r in results.values()] == ["web", "alice", "odd", "bad"]


def test_a_travelled_key_is_refused_after_the_switch_forever(pki, hosts):
    """Controller -> host switch, then the host offers the pushed key again (a canary rollback restored it): the
    store no longer holds that key, the index remembers it; refused, for this leaf and for any other."""
    issue(pki, "int", [dict(WEB, key_location="controller")], now=NOW)
    pushed = keys.from_pem(open(pki.leaf_path("web", "key.pem"), "rb").read(), "key.pem")
    assert "key_location_changed" in run(pki, [WEB], hosts)["web"]["reasons"]  # switched: the host's own key
    hosts["web"].install(pki, "web")
    assert not os.path.exists(pki.leaf_path("web", "key.pem"))
    rolled_back = Host()
    rolled_back.key = pushed
    assert_item_refused(pki, lambda: run(pki, [WEB], {"web": rolled_back}, now=NOW + 30 * DAY), "web",
                        "'web'", "has travelled", "never certified again", code="key_location_changed")
    other = dict(WEB, name="web3", common_name="web3.example.com")
    assert_item_refused(pki, lambda: run(pki, [other], {"web3": rolled_back}), "web3", "'web'", "'web3'",
                        "has travelled", code="key_location_changed")
    assert run(pki, [WEB], hosts, now=NOW + 30 * DAY)["web"]["action"] == "unchanged"
