"""Leaf certificates: profiles, SANs, key usage per key type, key types, serials, validity, output files."""

import ipaddress
import json
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from ansible_collections.mtls.rollout.plugins.module_utils.pki import issuance, keys, pem
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Index
from pkitest import (DAY, by_name, ca_cert, issue, leaf_cert, make_ca, public, read_certs, read_key, snapshot,
                     utcnow)

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.mark.parametrize("profile, ekus", [("server", [SERVER]), ("client", [CLIENT]), ("both", [SERVER, CLIENT])])
def test_profiles_set_eku(pki, profile, ekus):
    issue(pki, "int", [{"name": "x", "profile": profile, "common_name": "x.example.com"}])
    cert = leaf_cert(pki, "x")
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert list(eku.value) == ekus and not eku.critical
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca and bc.value.path_length is None


def test_san_dns_wildcard_ip_email_and_cn(pki):
    issue(pki, "int", [{"name": "web", "common_name": "www.example.com", "organization": "Acme",
                        "dns": ["*.example.com", "example.com"], "ip": ["192.0.2.10", "2001:db8::10"],
                        "email": ["ops@example.com"]}])
    cert = leaf_cert(pki, "web")
    san = ext(cert, x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty
    assert san.value.get_values_for_type(x509.DNSName) == ["*.example.com", "example.com", "www.example.com"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.10"),
                                                             ipaddress.ip_address("2001:db8::10")]
    assert san.value.get_values_for_type(x509.RFC822Name) == ["ops@example.com"]
    assert cert.subject.rfc4514_string() == "CN=www.example.com,O=Acme"


def test_server_cn_that_is_an_ip_goes_into_san_as_ip(pki):
    issue(pki, "int", [{"name": "byip", "common_name": "10.1.2.3"}])
    san = ext(leaf_cert(pki, "byip"), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert san.get_values_for_type(x509.DNSName) == []


def test_client_san_only_what_was_asked(pki):
    issue(pki, "int", [{"name": "alice", "profile": "client", "common_name": "Alice Smith"},
                       {"name": "bob", "profile": "client", "common_name": "bob", "email": "bob@example.com"}])
    with pytest.raises(x509.ExtensionNotFound):
        ext(leaf_cert(pki, "alice"), x509.SubjectAlternativeName)
    assert ext(leaf_cert(pki, "bob"), x509.SubjectAlternativeName).value.get_values_for_type(x509.RFC822Name) == [
        "bob@example.com"]


def test_san_is_critical_when_subject_is_empty(pki):
    issue(pki, "int", [{"name": "anon", "dns": "anon.example.com"}])
    cert = leaf_cert(pki, "anon")
    assert len(cert.subject) == 0
    assert ext(cert, x509.SubjectAlternativeName).critical


KU_FLAGS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
            "key_cert_sign", "crl_sign")


@pytest.mark.parametrize("key, profile, expected", [
    ({"key_type": "rsa", "key_size": 2048}, "server", {"digital_signature", "key_encipherment"}),
    ({"key_type": "rsa", "key_size": 2048}, "both", {"digital_signature", "key_encipherment"}),
    ({"key_type": "rsa", "key_size": 2048}, "client", {"digital_signature"}),
    ({}, "server", {"digital_signature"}),
    ({"key_type": "ec", "curve": "P-384"}, "server", {"digital_signature"}),
    ({"key_type": "ed25519"}, "server", {"digital_signature"}),
    ({"key_type": "ed25519"}, "client", {"digital_signature"}),
])
def test_key_usage_per_key_type(pki, key, profile, expected):
    issue(pki, "int", [{"name": "k", "profile": profile, "common_name": "k.example.com", **key}])
    ku = ext(leaf_cert(pki, "k"), x509.KeyUsage)
    assert ku.critical
    assert {f for f in KU_FLAGS if getattr(ku.value, f)} == expected


@pytest.mark.parametrize("item, check", [
    ({}, lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp256r1"),
    ({"key_type": "ec", "curve": "P-384"},
     lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp384r1"),
    ({"key_type": "rsa", "key_size": 2048}, lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
    ({"key_type": "rsa", "key_size": 3072}, lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 3072),
    ({"key_type": "ed25519"}, lambda k: isinstance(k, ed25519.Ed25519PublicKey)),
])
def test_key_types(pki, item, check):
    issue(pki, "int", [{"name": "k", "dns": "k.example.com", **item}])
    cert = leaf_cert(pki, "k")
    key = read_key(pki.leaf_path("k", "key.pem"))
    assert check(cert.public_key())
    assert public(key) == public(cert)
    assert open(pki.leaf_path("k", "key.pem"), "rb").read().startswith(b"-----BEGIN " b"PRIVATE KEY-----\n")  # PKCS#8


def test_rsa_4096_leaf_uses_the_key_in_the_store(pki, rsa4096_key):
    # the engine keeps a key that matches the spec, so the slow key is generated once (session fixture)
    os.makedirs(os.path.dirname(pki.leaf_path("big", "key.pem")), mode=0o700)
    with open(os.open(pki.leaf_path("big", "key.pem"), os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(keys.to_pem(rsa4096_key))
    result = issue(pki, "int", [{"name": "big", "dns": "big.example.com", "key_type": "rsa", "key_size": 4096}])[0]
    assert (result["action"], result["key_rotated"]) == ("issued", False)
    cert = leaf_cert(pki, "big")
    assert cert.public_key().key_size == 4096 and public(cert) == public(rsa4096_key)
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


def test_serials_positive_unique_with_entropy(pki):
    index = Index()
    serials = [issuance.serial(index, "int") for _i in range(2000)]
    assert len(set(serials)) == len(serials)
    assert all(s > 0 for s in serials)
    lengths = [s.bit_length() for s in serials]
    assert min(lengths) >= 64 and max(lengths) <= 159  # DER INTEGER <= 20 octets, positive
    # uniformly random 159-bit numbers: about half use all 159 bits, hardly any fewer than 150
    assert sum(n == 159 for n in lengths) > 800 and sum(n < 150 for n in lengths) < 10

    items = [{"name": f"s{i}", "dns": f"s{i}.example.com"} for i in range(12)]
    results = issue(pki, "int", items)
    certs = [leaf_cert(pki, f"s{i}") for i in range(12)]
    assert len({c.serial_number for c in certs}) == 12
    assert all(c.serial_number.bit_length() >= 64 for c in certs)
    assert [r["serial"] for r in results] == [format(c.serial_number, "x") for c in certs]


def test_serial_never_reused_for_the_same_issuer(pki, monkeypatch):
    issue(pki, "int", [{"name": "a", "dns": "a.example.com"}])
    taken = leaf_cert(pki, "a").serial_number
    fresh = taken + 1
    numbers = iter([taken, taken, fresh])
    monkeypatch.setattr(x509, "random_serial_number", lambda: next(numbers))
    assert issuance.serial(pki.load_index(), "int") == fresh
    assert next(numbers, None) is None  # both collisions were drawn and skipped
    numbers = iter([taken])
    assert issuance.serial(pki.load_index(), "root") == taken  # serials are unique per issuer


def test_leaf_validity_default_and_custom(pki):
    now = utcnow()
    issue(pki, "int", [{"name": "d", "dns": "d.example.com"}, {"name": "c", "dns": "c.example.com", "valid_days": 30}],
          now=now)
    assert leaf_cert(pki, "d").not_valid_after_utc - now == 365 * DAY
    assert leaf_cert(pki, "c").not_valid_after_utc - now == 30 * DAY
    assert (now - leaf_cert(pki, "c").not_valid_before_utc).total_seconds() == 300


def test_leaf_never_outlives_its_issuer(store):
    now = utcnow()
    make_ca(store, "root", now=now)
    make_ca(store, "short", "root", valid_days=30, now=now)
    result = issue(store, "short", [{"name": "w", "dns": "w.example.com"}], now=now)[0]
    issuer_end = ca_cert(store, "short").not_valid_after_utc
    assert leaf_cert(store, "w").not_valid_after_utc == issuer_end
    assert len(result["warnings"]) == 1
    assert "valid_days 365 would outlive issuer 'short'" in result["warnings"][0] and "clipped" in result["warnings"][0]
    # the clipped certificate is accepted as is on the next run (no endless re-issue)
    again = issue(store, "short", [{"name": "w", "dns": "w.example.com"}], now=now + DAY)[0]
    assert (again["action"], again["warnings"]) == ("unchanged", [])


# --- output files ----------------------------------------------------------------------------------

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_output_files_and_modes(pki):
    results = issue(pki, "int", [
        {"name": "web", "dns": "web.example.com", "pkcs12": {"password": "pw"}},
        {"name": "alice", "profile": "client", "common_name": "alice"}])
    root, inter = ca_cert(pki, "root"), ca_cert(pki, "int")
    for name in ("web", "alice"):
        def path(f, name=name):
            return pki.leaf_path(name, f)

        cert = leaf_cert(pki, name)
        assert public(read_key(path("key.pem"))) == public(cert)
        assert read_certs(path("chain.pem")) == [inter]
        assert read_certs(path("fullchain.pem")) == [cert, inter]
        assert read_certs(path("ca.pem")) == [root]
        assert mode(path("key.pem")) == 0o600
        assert mode(path("")) == 0o700
        for f in ("cert.pem", "chain.pem", "fullchain.pem", "ca.pem"):
            assert mode(path(f)) == 0o644, f
    assert mode(pki.leaf_path("web", "bundle.p12")) == 0o600
    assert not os.path.exists(pki.leaf_path("alice", "bundle.p12"))
    for d in (pki.root, os.path.join(pki.root, "certs"), os.path.join(pki.root, "ca"), pki.ca_path("root")):
        assert mode(d) == 0o700, d
    assert mode(pki.index_path) == 0o600
    assert mode(pki.ca_path("int", "key.pem")) == 0o600
    # every directory and key in the whole store follows the rule
    for rel, (kind, m, _unused) in snapshot(pki.root).items():
        if kind == "dir":
            assert m == 0o700, rel
        elif rel.endswith(("key.pem", ".p12", "index.json")):
            assert m == 0o600, rel
    web = by_name(results)["web"]
    assert web["paths"] == {"cert": pki.leaf_path("web", "cert.pem"), "key": pki.leaf_path("web", "key.pem"),
                            "chain": pki.leaf_path("web", "chain.pem"),
                            "fullchain": pki.leaf_path("web", "fullchain.pem"),
                            "ca": pki.leaf_path("web", "ca.pem"), "pkcs12": pki.leaf_path("web", "bundle.p12")}
    cert = leaf_cert(pki, "web")
    assert (web["serial"], web["fingerprint_sha256"], web["not_after"]) == (
        pem.serial_hex(cert), pem.fingerprint(cert), pem.iso(cert.not_valid_after_utc))


def test_bundle_content(pki):
    issue(pki, "int", [{"name": "c", "profile": "client", "common_name": "c",
                        "pkcs12": {"password": "pw", "friendly_name": "Laptop C"}},
                       {"name": "n", "profile": "client", "common_name": "n",
                        "pkcs12": {"password": "pw", "include_chain": False}}])
    data = open(pki.leaf_path("c", "bundle.p12"), "rb").read()
    p12 = pkcs12.load_pkcs12(data, b"pw")
    assert p12.cert.certificate == leaf_cert(pki, "c") and p12.cert.friendly_name == b"Laptop C"
    assert public(p12.key) == public(leaf_cert(pki, "c"))
    assert [c.certificate for c in p12.additional_certs] == [ca_cert(pki, "int"), ca_cert(pki, "root")]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"wrong")
    alone = pkcs12.load_pkcs12(open(pki.leaf_path("n", "bundle.p12"), "rb").read(), b"pw")
    assert alone.additional_certs == []


def test_leaf_directly_under_root_has_empty_chain(store):
    make_ca(store, "root")
    issue(store, "root", [{"name": "w", "dns": "w.example.com"}])
    assert open(store.leaf_path("w", "chain.pem"), "rb").read() == b""
    assert read_certs(store.leaf_path("w", "fullchain.pem")) == [leaf_cert(store, "w")]
    assert read_certs(store.leaf_path("w", "ca.pem")) == [ca_cert(store, "root")]


def test_index_record_for_leaf(pki):
    issue(pki, "int", [{"name": "web", "common_name": "web.example.com", "ip": "10.0.0.1"}])
    data = json.loads(open(pki.index_path, "rb").read())
    assert data["version"] == 1
    record = pki.load_index().current("leaf", "web")
    cert = leaf_cert(pki, "web")
    assert record == {**record, "kind": "leaf", "issuer": "int", "profile": "server", "status": "valid",
                      "serial": pem.serial_hex(cert), "fingerprint_sha256": pem.fingerprint(cert),
                      "san": ["dns:web.example.com", "ip:10.0.0.1"], "reason": "missing", "revoked_at": None,
                      "subject": "CN=web.example.com"}


def test_leaves_from_different_issuers_share_one_store(store):
    make_ca(store, "root")
    make_ca(store, "server-ca", "root")
    make_ca(store, "client-ca", "root")
    issue(store, "server-ca", [{"name": "web", "dns": "web.example.com"}])
    issue(store, "client-ca", [{"name": "alice", "profile": "client", "common_name": "alice"}])
    assert leaf_cert(store, "web").issuer.rfc4514_string() == "CN=server-ca"
    assert leaf_cert(store, "alice").issuer.rfc4514_string() == "CN=client-ca"
    assert read_certs(store.leaf_path("alice", "chain.pem")) == [ca_cert(store, "client-ca")]
    assert {r["name"]: r["issuer"] for r in store.load_index().records if r["kind"] == "leaf"} == {
        "web": "server-ca", "alice": "client-ca"}
