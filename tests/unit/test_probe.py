"""The probe's pure parts (plugins/module_utils/probe/): TLS message parsing and the diagnosis."""

import datetime as dt
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ansible_collections.mtls.rollout.plugins.module_utils.probe import certs, connect, diagnosis
from ansible_collections.mtls.rollout.plugins.module_utils.probe import handshake as tls_messages
from pkitest import DAY, issue, leaf_cert, make_ca, read_cert, utcnow

DER = serialization.Encoding.DER


@pytest.fixture
def world(store):
    """root -> server-ca, client-ca; root -> int1 -> int2 (a deep client); made 30 days ago."""
    past = utcnow() - 30 * DAY
    make_ca(store, "root", path_length=2, now=past)
    for name in ("server-ca", "client-ca", "int1"):
        make_ca(store, name, "root", now=past)
    make_ca(store, "int2", "int1", path_length=0, now=past)
    issue(store, "server-ca", [{"name": "web1", "dns": ["web1.example.com", "*.apps.example.com"], "ip": ["192.0.2.10"]}])
    issue(store, "client-ca", [{"name": "alice", "profile": "client", "common_name": "alice"},
                               {"name": "svc", "profile": "server", "dns": ["svc.example.com"]}])
    issue(store, "client-ca", [{"name": "old", "profile": "client", "common_name": "old", "valid_days": 2}],
          now=utcnow() - 10 * DAY)
    issue(store, "int2", [{"name": "deep", "profile": "client", "common_name": "deep"}])

    def ca(name):
        return read_cert(store.ca_path(name, "cert.pem"))

    def leaf(name):
        return leaf_cert(store, name)
    return types.SimpleNamespace(store=store, ca=ca, leaf=leaf)


def names(w, *cas):
    return [w.ca(c).subject.public_bytes() for c in cas]


def healthy(w, **kw):
    """What a correct server and an accepted client look like; override fields to break it."""
    obs = dict(host="192.0.2.10", name="web1.example.com", protocol="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256",
               server_chain=[w.leaf("web1"), w.ca("server-ca")], verified=True, verify_code=0, verify_message="ok",
               anchors=[w.ca("root")], client_auth_requested=True,
               acceptable_ca_names=names(w, "client-ca", "root"), client_chain=[w.leaf("alice"), w.ca("client-ca")],
               http_status=200, http_reason="OK", expect_client_auth=True)
    obs.update(kw)
    return diagnosis.Observation(**obs)


def codes(obs, now=None):
    return [p["code"] for p in diagnosis.diagnose(obs, now)]


REJECTED = {"http_status": 400, "http_reason": "The SSL certificate error"}


# --- TLS messages ---------------------------------------------------------------------------------

def _u(n, value):
    return value.to_bytes(n, "big")


def _vec(n, data):
    return _u(n, len(data)) + data


def handshake(kind, body):
    return bytes([kind]) + _vec(3, body)


def certificate_message(ders, tls13):
    if tls13:
        entries = b"".join(_vec(3, d) + _vec(2, b"") for d in ders)
        return handshake(11, _vec(1, b"") + _vec(3, entries))
    return handshake(11, _vec(3, b"".join(_vec(3, d) for d in ders)))


def certificate_request(dn_ders, tls13):
    authorities = _vec(2, b"".join(_vec(2, d) for d in dn_ders))
    if tls13:
        sig_algs = _u(2, 13) + _vec(2, _vec(2, b"\x04\x03\x08\x04"))
        cas = _u(2, 47) + _vec(2, authorities)
        return handshake(13, _vec(1, b"") + _vec(2, sig_algs + cas))
    return handshake(13, _vec(1, b"\x01\x40") + _vec(2, b"\x04\x03\x08\x04") + authorities)


@pytest.mark.parametrize("tls13", [False, True])
def test_certificate_and_request_messages_are_parsed(world, tls13):
    chain = [world.leaf("web1").public_bytes(DER), world.ca("server-ca").public_bytes(DER)]
    dns = names(world, "client-ca", "root")
    version = tls_messages.TLS13 if tls13 else 0x0303
    got_chain, got_names = tls_messages.messages_to_facts([(version, handshake(2, b"hello")),
                                                           (version, certificate_message(chain, tls13)),
                                                           (version, certificate_request(dns, tls13))])
    assert got_chain == chain and got_names == dns


def test_no_certificate_request_means_no_client_auth():
    assert tls_messages.messages_to_facts([(0x0303, handshake(14, b""))]) == (None, None)


def test_tls13_request_without_ca_names():
    msg = handshake(13, _vec(1, b"") + _vec(2, _u(2, 13) + _vec(2, _vec(2, b"\x04\x03"))))
    assert tls_messages.messages_to_facts([(tls_messages.TLS13, msg)]) == (None, [])


def test_truncated_message_raises_value_error():
    with pytest.raises(ValueError):
        tls_messages.parse_certificate_message(b"\x00\x00\x10\x00", tls13=False)


def test_der_names_read_back_as_cryptography_writes_them():
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bücher, Ltd"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Client CA #2"),
                      x509.NameAttribute(NameOID.EMAIL_ADDRESS, "pki@example.com")])
    assert tls_messages.parse_name(name.public_bytes()) == name
    assert tls_messages.name_from_der(name.public_bytes()) == name.rfc4514_string()
    assert tls_messages.name_from_der(b"\x01\x02") == "#0102"


def test_old_cryptography_naive_times_are_read_as_utc():
    naive = types.SimpleNamespace(not_valid_after=dt.datetime(2030, 1, 2, 3, 4, 5))
    assert certs.not_after(naive) == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_nginx_error_page_reason_is_its_title():
    page = (b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 10\r\n\r\n<html><head><title>400 The SSL "
            b"certificate error</title></head></html>")
    assert connect.parse_http_response(page)[:2] == (400, "The SSL certificate error")
    assert connect.parse_http_response(b"HTTP/1.1 200 OK\r\n\r\n{}")[:2] == (200, "OK")
    assert connect.parse_http_response(b"garbage")[0] is None


# --- diagnosis ------------------------------------------------------------------------------------

def test_healthy_exchange_has_no_diagnosis(world):
    assert diagnosis.diagnose(healthy(world)) == []
    report = connect.report(healthy(world))
    assert report["ok"] and report["certificate_count"] == 2 and report["client_chain_depth"] == 1
    assert report["acceptable_ca_names"] == ["CN=client-ca", "CN=root"]
    assert report["certificates"][0]["san_dns"] == ["web1.example.com", "*.apps.example.com"]


def test_server_sending_only_its_leaf(world):
    obs = healthy(world, server_chain=[world.leaf("web1")], verified=False, verify_code=20,
                  verify_message="unable to get local issuer certificate")
    [found] = diagnosis.diagnose(obs)
    assert found["code"] == "server_missing_intermediate"
    assert "CN=server-ca" in found["message"] and "fullchain.pem" in found["message"] and "unless" not in found["message"]
    unverified = healthy(world, server_chain=[world.leaf("web1")], verified=None, anchors=[])
    assert codes(unverified) == ["server_missing_intermediate"]
    assert "unless CN=server-ca is itself a root" in diagnosis.diagnose(unverified)[0]["message"]


def test_leaf_issued_by_the_root_itself_is_fine(world):
    issue(world.store, "root", [{"name": "direct", "dns": ["web1.example.com"]}])
    assert codes(healthy(world, server_chain=[world.leaf("direct")])) == []


def test_server_chain_from_another_ca(world):
    obs = healthy(world, verified=False, verify_code=20, verify_message="unable to get local issuer certificate",
                  anchors=[world.ca("int1")])
    assert codes(obs) == ["server_untrusted"]


def test_chain_out_of_order(world):
    assert codes(healthy(world, server_chain=[world.ca("server-ca"), world.leaf("web1")])) == \
        ["server_chain_order", "name_not_in_san"]


@pytest.mark.parametrize("name, expect, found", [
    ("web1.example.com", [], []),
    ("WEB1.example.com.", [], []),
    ("x.apps.example.com", [], []),
    ("a.b.apps.example.com", [], ["name_not_in_san"]),
    ("apps.example.com", [], ["name_not_in_san"]),
    ("192.0.2.10", [], []),
    ("192.0.2.99", [], ["ip_not_in_san"]),
    ("web1.example.com", ["192.0.2.10", "web2.example.com", "2001:db8::1"], ["name_not_in_san", "ip_not_in_san"]),
])
def test_names_and_addresses_against_the_san(world, name, expect, found):
    assert codes(healthy(world, name=name, expect_names=expect)) == found


def test_ip_message_lists_what_the_certificate_holds(world):
    [found] = diagnosis.diagnose(healthy(world, name="192.0.2.99"))
    assert "192.0.2.99 is not in" in found["message"] and "web1.example.com, *.apps.example.com, 192.0.2.10" in \
        found["message"] and "mtls_server_ips" in found["message"]


def test_expired_and_not_yet_valid_server(world):
    assert codes(healthy(world), now=utcnow() + 400 * DAY) == ["server_expired"]
    assert codes(healthy(world, **REJECTED), now=utcnow() + 400 * DAY) == ["server_expired", "client_expired"]
    assert "server_not_yet_valid" in codes(healthy(world), now=utcnow() - 1 * DAY)


def test_client_without_a_certificate(world):
    obs = healthy(world, client_chain=[], http_status=400, http_reason="No required SSL certificate was sent")
    [found] = diagnosis.diagnose(obs)
    assert found["code"] == "client_certificate_required" and "/etc/mtls/client/cert.pem" in found["message"]


def test_server_that_does_not_ask_for_a_client_certificate(world):
    obs = healthy(world, client_auth_requested=False, acceptable_ca_names=[])
    assert codes(obs) == ["client_auth_not_requested"]
    assert codes(healthy(world, client_auth_requested=False, acceptable_ca_names=[], expect_client_auth=False)) == []
    assert codes(healthy(world, acceptable_ca_names=[])) == ["no_acceptable_ca_names"]


def test_client_from_a_foreign_ca(world):
    obs = healthy(world, client_chain=[world.leaf("deep")], **REJECTED)
    [found] = diagnosis.diagnose(obs)
    assert found["code"] == "client_ca_not_accepted"
    assert "issued by CN=int2" in found["message"] and "CN=client-ca; CN=root" in found["message"]


def test_client_whose_intermediate_chains_to_an_accepted_root_is_accepted(world):
    """nginx builds leaf -> server-ca (sent) -> root (trusted): only the missing clientAuth stops a server cert."""
    obs = healthy(world, client_chain=[world.leaf("web1"), world.ca("server-ca")], **REJECTED)
    assert codes(obs) == ["client_wrong_purpose"]
    assert codes(healthy(world, client_chain=[world.leaf("web1")], **REJECTED)) == \
        ["client_ca_not_accepted", "client_wrong_purpose"]


def test_expired_client(world):
    obs = healthy(world, client_chain=[world.leaf("old"), world.ca("client-ca")], **REJECTED)
    [found] = diagnosis.diagnose(obs)
    assert found["code"] == "client_expired" and "error 10" in found["message"]


def test_server_profile_certificate_used_as_client(world):
    [found] = diagnosis.diagnose(healthy(world, client_chain=[world.leaf("svc")], **REJECTED))
    assert found["code"] == "client_wrong_purpose" and "clientAuth" in found["message"]
    assert codes(healthy(world, client_chain=[world.ca("client-ca")], **REJECTED)) == ["client_wrong_purpose"]


def test_revoked_client(world):
    alice = world.leaf("alice")
    revoked = {alice.serial_number: "on the CRL of CN=client-ca since 2026-01-01T00:00:00Z"}
    [found] = diagnosis.diagnose(healthy(world, revoked=revoked, revocation_checked=True, **REJECTED))
    assert found["code"] == "client_revoked" and f"{alice.serial_number:x}" in found["message"]
    # accepted although revoked: the server's CRL is missing or stale
    assert codes(healthy(world, revoked=revoked, revocation_checked=True)) == ["revoked_client_accepted"]


def test_chain_deeper_than_nginx_default_depth(world):
    obs = healthy(world, client_chain=[world.leaf("deep"), world.ca("int2"), world.ca("int1")],
                  acceptable_ca_names=names(world, "int2", "int1", "root"), **REJECTED)
    [found] = diagnosis.diagnose(obs)
    assert found["code"] == "client_chain_too_deep" and "at least 2" in found["message"]
    assert diagnosis.client_depth(obs.client_chain) == 2
    assert codes(healthy(world, client_chain=obs.client_chain, acceptable_ca_names=obs.acceptable_ca_names)) == []


def test_rejection_without_a_visible_cause_points_at_the_crls(world):
    [found] = diagnosis.diagnose(healthy(world, **REJECTED))
    assert found["code"] == "client_rejected"
    assert "errors 3/12" in found["message"] and "revocation was not checked" in found["message"]
    checked = diagnosis.diagnose(healthy(world, revocation_checked=True, **REJECTED))[0]["message"]
    assert "revocation was not checked" not in checked


def test_handshake_alert_after_the_client_certificate(world):
    obs = healthy(world, http_status=None, http_reason=None, handshake_error="TLSV1_ALERT_UNKNOWN_CA",
                  alert="TLSV1_ALERT_UNKNOWN_CA", client_chain=[world.leaf("deep")])
    assert codes(obs) == ["client_ca_not_accepted"]


def test_connection_and_handshake_failures(world):
    [found] = diagnosis.diagnose(diagnosis.Observation(host="192.0.2.10", port=8443, connect_error="Connection refused"))
    assert found["code"] == "connection_failed" and "port 8443" in found["message"]
    obs = diagnosis.Observation(host="192.0.2.10", handshake_error="WRONG_VERSION_NUMBER")
    assert codes(obs) == ["handshake_failed"]


@pytest.mark.parametrize("status, code", [(502, "backend_unavailable"), (404, "http_error"), (500, "http_error")])
def test_http_errors(world, status, code):
    assert codes(healthy(world, http_status=status, http_reason="x")) == [code]
