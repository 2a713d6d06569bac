"""CA hierarchies of any depth: extensions, key linkage, path lengths, name constraints, encrypted keys."""

import ipaddress
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ansible_collections.mtls.rollout.plugins.module_utils.pki import build, keys, pem, verify
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from pkitest import (DAY, assert_refused, by_name, ca_cert, issue, leaf_cert, make_ca, read_certs, snapshot,
                     utcnow)


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_three_level_hierarchy_and_leaf(deep_pki):
    store = deep_pki
    root, int1, int2 = (ca_cert(store, n) for n in ("root", "int1", "int2"))
    results = issue(store, "int2", [{"name": "web", "dns": "web.example.com"}])
    assert [(r["action"], r["reasons"]) for r in results] == [("issued", ["missing"])]
    leaf = leaf_cert(store, "web")

    # names and signatures link leaf -> int2 -> int1 -> root (self-signed)
    for child, parent in ((leaf, int2), (int2, int1), (int1, root), (root, root)):
        assert child.issuer == parent.subject
        child.verify_directly_issued_by(parent)
        # SKI/AKI linkage: AKI of the child is the SKI of its issuer
        assert pem.ski(parent) is not None and pem.aki(child) == pem.ski(parent)
    for cert in (leaf, int2, int1, root):
        assert pem.ski(cert) == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        assert not ext(cert, x509.SubjectKeyIdentifier).critical
        assert not ext(cert, x509.AuthorityKeyIdentifier).critical

    # CAs: basicConstraints critical with the path length asked for; keyCertSign + cRLSign, critical
    for cert, path_length in ((root, 2), (int1, 1), (int2, 0)):
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == path_length
        ku = ext(cert, x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        assert not (ku.value.digital_signature or ku.value.key_encipherment or ku.value.content_commitment)
        with pytest.raises(x509.ExtensionNotFound):
            ext(cert, x509.ExtendedKeyUsage)
    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca

    # CA directories: chain.pem = the CAs above, fullchain.pem = the CA then those above
    assert read_certs(store.ca_path("int2", "chain.pem")) == [int1, root]
    assert read_certs(store.ca_path("int2", "fullchain.pem")) == [int2, int1, root]
    assert read_certs(store.ca_path("int1", "chain.pem")) == [root]
    assert not os.path.exists(store.ca_path("root", "chain.pem"))
    assert read_certs(store.ca_path("root", "fullchain.pem")) == [root]
    # leaf: chain = intermediates, fullchain = leaf then intermediates, ca = root
    assert read_certs(store.leaf_path("web", "chain.pem")) == [int2, int1]
    assert read_certs(store.leaf_path("web", "fullchain.pem")) == [leaf, int2, int1]
    assert read_certs(store.leaf_path("web", "ca.pem")) == [root]
    assert verify.verify(leaf, "server", [root], [int2, int1], hostname="web.example.com")["depth"] == 2


def test_four_intermediates_deep(store):
    make_ca(store, "root")
    parent = "root"
    for i in range(1, 5):
        make_ca(store, f"i{i}", parent)
        parent = f"i{i}"
    issue(store, "i4", [{"name": "deep", "profile": "client", "common_name": "deep"}])
    chain = read_certs(store.leaf_path("deep", "chain.pem"))
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=i4", "CN=i3", "CN=i2", "CN=i1"]
    result = verify.verify(leaf_cert(store, "deep"), "client", [ca_cert(store, "root")], chain)
    assert result["valid"] and result["depth"] == 4


def test_ca_result_shape(store):
    root = make_ca(store, "root", subject={"common_name": "Acme Root", "organization": "Acme", "country": "DE"})
    assert (root["action"], root["reasons"], root["is_root"]) == ("issued", ["missing"], True)
    assert "chain" not in root["paths"] and root["paths"]["key"] == store.ca_path("root", "key.pem")
    cert = ca_cert(store, "root")
    assert root["serial"] == format(cert.serial_number, "x") and root["fingerprint_sha256"] == pem.fingerprint(cert)
    assert cert.subject.rfc4514_string() == "CN=Acme Root,O=Acme,C=DE"
    inter = make_ca(store, "int", "root")
    assert (inter["is_root"], inter["paths"]["chain"]) == (False, store.ca_path("int", "chain.pem"))
    assert ca_cert(store, "int").issuer.rfc4514_string() == "CN=Acme Root,O=Acme,C=DE"


def test_ca_rerun_is_unchanged_and_does_no_crypto(pki, monkeypatch):
    before = snapshot(pki.root)

    def boom(*a, **k):
        raise AssertionError("crypto work on an unchanged CA")
    monkeypatch.setattr(keys, "generate", boom)
    monkeypatch.setattr(build, "ca_certificate", boom)
    for name, issuer in (("root", None), ("int", "root")):
        result = make_ca(pki, name, issuer)
        assert (result["action"], result["changed"], result["reasons"]) == ("unchanged", False, [])
    assert snapshot(pki.root) == before


def test_default_validity_and_backdating(store):
    now = utcnow()
    make_ca(store, "root", now=now)
    make_ca(store, "int", "root", now=now)
    issue(store, "int", [{"name": "web", "dns": "web.example.com"}], now=now)
    for cert, days in ((ca_cert(store, "root"), 3650), (ca_cert(store, "int"), 1825), (leaf_cert(store, "web"), 365)):
        assert cert.not_valid_after_utc - now == days * DAY
        assert (now - cert.not_valid_before_utc).total_seconds() == 300  # 5 minutes of clock-skew slack


def test_intermediate_clipped_to_root_with_warning(store):
    now = utcnow()
    make_ca(store, "root", valid_days=100, now=now)
    result = make_ca(store, "int", "root", now=now)  # wants 1825 days
    assert ca_cert(store, "int").not_valid_after_utc == ca_cert(store, "root").not_valid_after_utc
    assert len(result["warnings"]) == 1 and "clipped" in result["warnings"][0] and "'root'" in result["warnings"][0]
    assert make_ca(store, "int", "root", now=now)["action"] == "unchanged"


def test_path_length_zero_cannot_issue_a_ca(store):
    make_ca(store, "root", path_length=0)
    assert_refused(store, lambda: make_ca(store, "int", "root"), "'root'", "path_length 0", code="path_length")


def test_path_length_must_shrink_below_issuer(store):
    make_ca(store, "root", path_length=1)
    assert_refused(store, lambda: make_ca(store, "int", "root", path_length=1),
                   "path_length 1 of CA 'int'", "'root'", code="path_length")
    make_ca(store, "int", "root", path_length=0)
    assert ext(ca_cert(store, "int"), x509.BasicConstraints).value.path_length == 0


def test_ec_p384_ca_signs_with_sha384(store):
    make_ca(store, "root", curve="P-384")
    make_ca(store, "int", "root")
    assert isinstance(ca_cert(store, "root").signature_hash_algorithm, hashes.SHA384)
    assert isinstance(ca_cert(store, "int").signature_hash_algorithm, hashes.SHA384)
    issue(store, "int", [{"name": "w", "dns": "w.example.com"}])
    assert isinstance(leaf_cert(store, "w").signature_hash_algorithm, hashes.SHA256)  # int is P-256


@pytest.mark.parametrize("key_type, key_size", [("rsa", 2048), ("ed25519", None)])
def test_ca_key_types(store, key_type, key_size):
    make_ca(store, "root", key_type=key_type, key_size=key_size)
    make_ca(store, "int", "root", key_type=key_type, key_size=key_size)
    issue(store, "int", [{"name": "w", "dns": "w.example.com"}])
    assert keys.spec_of(ca_cert(store, "int").public_key()) == keys.key_spec(key_type, key_size)
    leaf_cert(store, "w").verify_directly_issued_by(ca_cert(store, "int"))


# --- name constraints ---------------------------------------------------------------------------------

NC = {"permitted_dns": ["example.com", ".example.org"], "excluded_dns": ["secret.example.com"],
      "permitted_ip": ["10.0.0.0/8", "2001:db8::/32"], "excluded_ip": ["10.66.0.0/16"]}


@pytest.fixture
def constrained(store):
    make_ca(store, "root", name_constraints_data=NC)
    make_ca(store, "int", "root")
    return store


def test_name_constraints_written(constrained):
    nc = ext(ca_cert(constrained, "root"), x509.NameConstraints)
    assert nc.critical
    assert set(nc.value.permitted_subtrees) == {
        x509.DNSName("example.com"), x509.DNSName("example.org"),
        x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")), x509.IPAddress(ipaddress.ip_network("2001:db8::/32"))}
    assert set(nc.value.excluded_subtrees) == {x509.DNSName("secret.example.com"),
                                               x509.IPAddress(ipaddress.ip_network("10.66.0.0/16"))}
    with pytest.raises(x509.ExtensionNotFound):
        ext(ca_cert(constrained, "int"), x509.NameConstraints)


def test_name_constraints_not_critical_when_asked(store):
    make_ca(store, "root", name_constraints_data={"permitted_dns": ["example.com"], "critical": False})
    assert not ext(ca_cert(store, "root"), x509.NameConstraints).critical


@pytest.mark.parametrize("dns, ip", [
    (["example.com", "www.example.com", "*.apps.example.com"], ["10.1.2.3", "2001:db8::7"]),
    (["a.b.example.org", "example.org"], []),
])
def test_leaf_inside_constraints_issued_and_verifies(constrained, dns, ip):
    issue(constrained, "int", [{"name": "ok", "dns": dns, "ip": ip}])
    result = verify.verify(leaf_cert(constrained, "ok"), "server", [ca_cert(constrained, "root")],
                           [ca_cert(constrained, "int")], hostname=dns[0].replace("*", "x"))
    assert result["valid"], result["problems"]


@pytest.mark.parametrize("dns, ip, bad", [
    (["www.example.net"], [], "www.example.net"),
    (["example.com.evil.net"], [], "example.com.evil.net"),
    (["notexample.com"], [], "notexample.com"),
    (["secret.example.com"], [], "secret.example.com"),
    (["x.secret.example.com"], [], "x.secret.example.com"),
    (["*.example.net"], [], "*.example.net"),
    (["ok.example.com"], ["192.168.1.1"], "192.168.1.1"),
    (["ok.example.com"], ["10.66.1.1"], "10.66.1.1"),
    (["ok.example.com"], ["2001:db9::1"], "2001:db9::1"),
])
def test_leaf_outside_constraints_refused(constrained, dns, ip, bad):
    issue(constrained, "int", [{"name": "fine", "dns": "fine.example.com"}])
    # the whole list is refused: the good item is not re-issued either, nothing is written
    error = assert_refused(constrained, lambda: issue(constrained, "int", [
        {"name": "fine", "dns": "fine.example.com", "force": True}, {"name": "bad", "dns": dns, "ip": ip}]),
        f"certificate 'bad': {bad}", "not permitted by the name constraints of CN=root", code="name_constraints")
    assert "fine.example.com" not in str(error)


def test_constraints_on_an_intermediate_are_enforced(store):
    make_ca(store, "root")
    make_ca(store, "int", "root", name_constraints_data={"permitted_ip": ["192.0.2.0/24"],
                                                         "permitted_dns": ["lab.internal"]})
    issue(store, "int", [{"name": "a", "dns": "a.lab.internal", "ip": "192.0.2.9"}])
    assert_refused(store, lambda: issue(store, "int", [{"name": "b", "ip": "198.51.100.1"}]),
                   "198.51.100.1", "CN=int", code="name_constraints")


# --- passphrase-protected CA keys ---------------------------------------------------------------------

def test_encrypted_ca_key_is_pkcs8_and_opens_only_with_the_passphrase(deep_pki):
    path = deep_pki.ca_path("int1", "key.pem")
    data = open(path, "rb").read()
    assert data.startswith(b"-----BEGIN " b"ENCRYPTED PRIVATE KEY-----\n")  # PKCS#8 EncryptedPrivateKeyInfo
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, b"wrong")
    key = serialization.load_pem_private_key(data, b"int1-pass")
    assert keys.public_der(key) == keys.public_der(ca_cert(deep_pki, "int1").public_key())
    assert not keys.is_encrypted(open(deep_pki.ca_path("int2", "key.pem"), "rb").read())


def test_wrong_passphrase_is_named_and_changes_nothing(deep_pki):
    key_path = deep_pki.ca_path("int1", "key.pem")
    assert_refused(deep_pki, lambda: issue(deep_pki, "int1", [{"name": "w", "dns": "w.example.com"}],
                                           passphrase="wrong"),
                   f"wrong passphrase for {key_path}", code="bad_passphrase")
    assert_refused(deep_pki, lambda: issue(deep_pki, "int1", [{"name": "w", "dns": "w.example.com"}]),
                   f"{key_path} is encrypted", code="passphrase_required")
    assert_refused(deep_pki, lambda: make_ca(deep_pki, "int1", "root", passphrase="wrong", path_length=1),
                   f"wrong passphrase for {key_path}", code="bad_passphrase")
    assert_refused(deep_pki, lambda: make_ca(deep_pki, "int3", "int1", issuer_passphrase="nope", path_length=0),
                   f"wrong passphrase for {key_path}", code="bad_passphrase")
    results = issue(deep_pki, "int1", [{"name": "w", "dns": "w.example.com"}], passphrase="int1-pass")
    assert results[0]["action"] == "issued"
    assert make_ca(deep_pki, "int1", "root", passphrase="int1-pass", path_length=1)["action"] == "unchanged"


def test_adding_a_passphrase_encrypts_the_existing_key(pki):
    path = pki.ca_path("int", "key.pem")
    public_before = keys.public_der(ca_cert(pki, "int"))
    serial_before = ca_cert(pki, "int").serial_number
    result = make_ca(pki, "int", "root", passphrase="later")
    assert (result["action"], result["reasons"]) == ("updated", ["key_encrypted"])
    data = open(path, "rb").read()
    assert keys.is_encrypted(data)
    assert keys.public_der(keys.from_pem(data, path, "later")) == public_before
    assert ca_cert(pki, "int").serial_number == serial_before  # same certificate, only the key file changed
    assert make_ca(pki, "int", "root", passphrase="later")["action"] == "unchanged"


def test_ca_without_issuer_key_is_refused(pki):
    os.unlink(pki.ca_path("int", "key.pem"))
    assert_refused(pki, lambda: issue(pki, "int", [{"name": "w", "dns": "w.example.com"}]),
                   pki.ca_path("int", "key.pem"), "missing", code="no_issuer_key")
    assert_refused(pki, lambda: make_ca(pki, "int", "root"), pki.ca_path("int", "key.pem"), code="no_key")


def test_issuer_expired_for_intermediate(store):
    past = utcnow() - 400 * DAY
    make_ca(store, "root", valid_days=30, now=past)
    assert_refused(store, lambda: make_ca(store, "int", "root"), "'root'", "expired", code="issuer_expired")


def test_ca_index_records(deep_pki):
    index = deep_pki.load_index()
    cas = [r for r in index.records if r["kind"] == "ca"]
    assert [(r["name"], r["issuer"], r["status"]) for r in cas] == [
        ("root", "root", "valid"), ("int1", "root", "valid"), ("int2", "int1", "valid")]
    for r in cas:
        cert = ca_cert(deep_pki, r["name"])
        assert (r["serial"], r["fingerprint_sha256"]) == (pem.serial_hex(cert), pem.fingerprint(cert))
    assert by_name(issue(deep_pki, "int2", [{"name": "w", "dns": "w.example.com"}]))["w"]["action"] == "issued"
    assert deep_pki.load_index().current("leaf", "w")["issuer"] == "int2"


def test_rejects_issuer_that_is_unknown_or_a_leaf(pki):
    issue(pki, "int", [{"name": "web", "dns": "web.example.com"}])
    assert_refused(pki, lambda: make_ca(pki, "sub", "nope"), "issuer 'nope' does not exist", "int, root",
                   code="no_issuer")
    assert_refused(pki, lambda: make_ca(pki, "sub", "web"), "issuer 'web' is not a CA", code="not_a_ca")


def test_check_mode_on_an_empty_store_creates_nothing(store):
    result = make_ca(store, "root", check=True)
    assert (result["action"], result["reasons"], result.get("serial")) == ("issued", ["missing"], None)
    assert not os.path.exists(store.root)


def test_ed25519_ca_has_no_signature_hash(store):
    make_ca(store, "root", key_type="ed25519")
    cert = ca_cert(store, "root")
    assert cert.signature_hash_algorithm is None
    cert.verify_directly_issued_by(cert)
    with pytest.raises(PkiError):
        make_ca(store, "root", key_type="ed448")
