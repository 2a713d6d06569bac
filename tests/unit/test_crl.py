"""Revocation and CRLs (plugins/module_utils/pki/crl.py): index records, CRL contents, idempotence, refresh."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pytest
from cryptography import x509

from ansible_collections.mtls.rollout.plugins.module_utils.pki import crl, pem
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from pkitest import DAY, issue, make_ca, utcnow

CLIENT = {"profile": "client"}


@pytest.fixture
def fleet(pki):
    """root -> int with two clients and a server."""
    issue(pki, "int", [{"name": "client1", **CLIENT, "common_name": "client1"},
                       {"name": "client2", **CLIENT, "common_name": "client2"},
                       {"name": "web1", "dns": ["web1.example.com"]}])
    return pki


def read_crl(store, ca):
    with open(store.ca_path(ca, "crl.pem"), "rb") as f:
        return x509.load_pem_x509_crl(f.read())


def record(store, name):
    return store.load_index().current("leaf", name)


def serial_of(store, name):
    return int(record(store, name)["serial"], 16)


def crl_bytes(store, ca):
    return store.read(store.ca_path(ca, "crl.pem"))


def test_revoke_by_name_records_it_and_writes_a_signed_crl(fleet):
    now = utcnow()
    result = crl.revoke(fleet, names=["client2"], reason="key_compromise", now=now)
    assert result["changed"]
    [entry] = result["revoked"]
    assert entry["name"] == "client2" and entry["action"] == "revoked" and entry["issuer"] == "int"
    rec = record(fleet, "client2")
    assert rec["status"] == "revoked" and rec["revoked_at"] == pem.iso(now) and rec["revocation_reason"] == "key_compromise"
    assert record(fleet, "client1")["status"] == "valid"
    assert [c["ca"] for c in result["crls"]] == ["int"] and result["crls"][0]["action"] == "issued"
    assert result["crl_files"] == [fleet.ca_path("int", "crl.pem")]

    ca_cert = x509.load_pem_x509_certificate(fleet.read(fleet.ca_path("int", "cert.pem")))
    c = read_crl(fleet, "int")
    assert c.issuer == ca_cert.subject and c.is_signature_valid(ca_cert.public_key())
    assert crl.crl_number(c) == 1
    aki = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == pem.ski(ca_cert)
    assert c.next_update_utc - c.last_update_utc == dt.timedelta(days=7, minutes=5)
    entry = c.get_revoked_certificate_by_serial_number(serial_of(fleet, "client2"))
    assert entry is not None and entry.revocation_date_utc == now.replace(microsecond=0)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert c.get_revoked_certificate_by_serial_number(serial_of(fleet, "client1")) is None
    assert oct(os.stat(fleet.ca_path("int", "crl.pem")).st_mode & 0o777) == "0o644"


def test_revoking_again_changes_nothing(fleet):
    now = utcnow()
    crl.revoke(fleet, names=["client2"], now=now)
    before, index_before = crl_bytes(fleet, "int"), fleet.read(fleet.index_path)
    result = crl.revoke(fleet, names=["client2"], reason="superseded", now=now + dt.timedelta(hours=1))
    assert not result["changed"]
    assert result["revoked"][0]["action"] == "already_revoked"
    assert result["revoked"][0]["reason"] == "unspecified"  # the first revocation stands
    assert result["crls"][0]["action"] == "unchanged"
    assert crl_bytes(fleet, "int") == before and fleet.read(fleet.index_path) == index_before


def test_unspecified_reason_leaves_the_reason_code_out(fleet):
    crl.revoke(fleet, names=["client2"])
    entry = read_crl(fleet, "int").get_revoked_certificate_by_serial_number(serial_of(fleet, "client2"))
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_each_new_revocation_signs_again_with_a_higher_number(fleet):
    now = utcnow()
    crl.revoke(fleet, names=["client2"], now=now)
    result = crl.revoke(fleet, serials=[record(fleet, "client1")["serial"]], now=now)
    assert result["crls"][0]["action"] == "refreshed" and result["crls"][0]["reason"].startswith("content_changed")
    c = read_crl(fleet, "int")
    assert crl.crl_number(c) == 2 and len(c) == 2


def test_serial_forms_and_unknown_targets(fleet):
    serial = record(fleet, "client1")["serial"]
    colons = ":".join(serial.upper().zfill(len(serial) + len(serial) % 2)[i:i + 2]
                      for i in range(0, len(serial) + len(serial) % 2, 2))
    result = crl.revoke(fleet, serials=["0x" + serial.upper()])
    assert result["revoked"][0]["serial"] == serial
    assert crl.revoke(fleet, serials=[colons])["revoked"][0]["action"] == "already_revoked"
    with pytest.raises(PkiError, match="serial abc123 is not in the index"):
        crl.revoke(fleet, serials=["AB:C1:23"])
    with pytest.raises(PkiError, match="invalid serial 'xyz'"):
        crl.revoke(fleet, serials=["xyz"])
    with pytest.raises(PkiError, match="no certificate named 'nobody'.*known: client1, client2, web1"):
        crl.revoke(fleet, names=["nobody"])
    with pytest.raises(PkiError, match="self-signed root"):
        crl.revoke(fleet, names=["root"])
    with pytest.raises(PkiError, match="unknown revocation reason"):
        crl.revoke(fleet, names=["client1"], reason="bored")


def test_unknown_name_leaves_the_store_untouched(fleet):
    index_before = fleet.read(fleet.index_path)
    with pytest.raises(PkiError):
        crl.revoke(fleet, names=["client2", "nobody"])
    assert fleet.read(fleet.index_path) == index_before
    assert not os.path.exists(fleet.ca_path("int", "crl.pem"))


def test_name_revokes_the_renewed_certificate_too_but_not_expired_ones(store):
    now = utcnow()
    pki = store
    make_ca(pki, "root", now=now - 365 * DAY)
    make_ca(pki, "int", "root", now=now - 365 * DAY)
    issue(pki, "int", [{"name": "c", "common_name": "c", **CLIENT, "valid_days": 1}], now=now - 10 * DAY)  # expired long ago
    issue(pki, "int", [{"name": "c", "common_name": "c", **CLIENT, "valid_days": 30}], now=now - 2 * DAY)  # superseded, still valid
    issue(pki, "int", [{"name": "c", "common_name": "c", **CLIENT}], force=True, now=now)  # current
    records = [r for r in pki.load_index().records if r["name"] == "c"]
    assert [r["status"] for r in records] == ["superseded", "superseded", "valid"]
    result = crl.revoke(pki, names=["c"], now=now)
    assert sorted(r["serial"] for r in result["revoked"]) == sorted(r["serial"] for r in records[1:])
    statuses = [r["status"] for r in pki.load_index().records if r["name"] == "c"]
    assert statuses == ["superseded", "revoked", "revoked"]
    assert len(read_crl(pki, "int")) == 2


def test_expired_certificates_leave_the_crl(pki):
    now = utcnow()
    issue(pki, "int", [{"name": "short", "common_name": "short", **CLIENT, "valid_days": 3}], now=now)
    crl.revoke(pki, names=["short"], now=now)
    assert len(read_crl(pki, "int")) == 1
    result = crl.revoke(pki, cas=["int"], now=now + 4 * DAY)
    assert result["crls"][0]["reason"].startswith("content_changed")
    assert len(read_crl(pki, "int")) == 0


def test_cas_alone_writes_empty_crls_and_include_parents_climbs_to_the_root(deep_pki):
    now = utcnow()
    result = crl.revoke(deep_pki, cas=["int2"], include_parents=True, passphrases={"int1": "int1-pass"}, now=now)
    assert [c["ca"] for c in result["crls"]] == ["int2", "int1", "root"]
    assert all(c["action"] == "issued" and c["revoked_count"] == 0 for c in result["crls"])
    assert result["crl_files"] == [deep_pki.ca_path(n, "crl.pem") for n in ("int2", "int1", "root")]
    assert crl.chain_names(deep_pki, ["int2", "int1"]) == ["int2", "int1", "root"]
    assert not crl.revoke(deep_pki, cas=["int2", "int1", "root"], now=now)["changed"]


def test_encrypted_ca_key_needs_its_passphrase(deep_pki):
    with pytest.raises(PkiError, match="encrypted: a passphrase is needed"):
        crl.revoke(deep_pki, cas=["int1"])
    with pytest.raises(PkiError, match="wrong passphrase"):
        crl.revoke(deep_pki, cas=["int1"], passphrases={None: "nope"})
    assert crl.revoke(deep_pki, cas=["int1"], passphrases={None: "int1-pass"})["changed"]


def test_refreshed_only_inside_the_last_third_of_its_validity(fleet):
    now = utcnow()
    crl.revoke(fleet, cas=["int"], now=now)
    first = crl_bytes(fleet, "int")
    assert not crl.revoke(fleet, cas=["int"], now=now + 4 * DAY)["changed"]  # 3 days left of 7
    assert crl_bytes(fleet, "int") == first
    result = crl.revoke(fleet, cas=["int"], now=now + 5 * DAY)  # 2 days left
    assert result["changed"] and result["crls"][0]["reason"].startswith("due: ")
    assert crl.crl_number(read_crl(fleet, "int")) == 2
    assert read_crl(fleet, "int").next_update_utc > now + 11 * DAY
    result = crl.revoke(fleet, cas=["int"], now=now + 30 * DAY)
    assert result["crls"][0]["reason"].startswith("expired")


def test_refresh_window_and_validity_are_configurable(fleet):
    now = utcnow()
    crl.revoke(fleet, cas=["int"], valid_days=30, now=now)
    assert read_crl(fleet, "int").next_update_utc == (now + 30 * DAY).replace(microsecond=0)
    assert not crl.revoke(fleet, cas=["int"], refresh_before_days=5, now=now + 24 * DAY)["changed"]
    assert crl.revoke(fleet, cas=["int"], refresh_before_days=7, now=now + 24 * DAY)["changed"]
    assert crl.revoke(fleet, cas=["int"], force=True, now=now + 24 * DAY)["crls"][0]["reason"] == "forced"


def test_crl_number_survives_a_lost_crl_file(fleet):
    for _i in range(3):
        crl.revoke(fleet, cas=["int"], force=True)
    os.unlink(fleet.ca_path("int", "crl.pem"))
    result = crl.revoke(fleet, cas=["int"])
    assert result["crls"][0]["reason"] == "missing" and crl.crl_number(read_crl(fleet, "int")) == 4


def test_rekeyed_ca_signs_again(fleet):
    crl.revoke(fleet, names=["client2"])
    make_ca(fleet, "int", "root", force=True, rotate_key=True)
    result = crl.revoke(fleet, cas=["int"])
    assert result["crls"][0]["reason"].startswith("issuer_changed")
    ca_cert = x509.load_pem_x509_certificate(fleet.read(fleet.ca_path("int", "cert.pem")))
    assert read_crl(fleet, "int").is_signature_valid(ca_cert.public_key())
    assert len(read_crl(fleet, "int")) == 1  # the revocation is kept


def test_unreadable_crl_is_replaced(fleet):
    crl.revoke(fleet, cas=["int"])
    with open(fleet.ca_path("int", "crl.pem"), "wb") as f:
        f.write(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    assert crl.revoke(fleet, cas=["int"])["crls"][0]["reason"] == "unreadable"
    assert crl.crl_number(read_crl(fleet, "int")) == 2


def test_check_mode_writes_nothing(fleet):
    index_before = fleet.read(fleet.index_path)
    result = crl.revoke(fleet, names=["client2"], check=True)
    assert result["changed"] and result["revoked"][0]["action"] == "revoked"
    assert result["crls"][0]["action"] == "issued" and result["crls"][0]["revoked_count"] == 1
    assert fleet.read(fleet.index_path) == index_before
    assert not os.path.exists(fleet.ca_path("int", "crl.pem"))


def test_check_reports_missing_stale_and_incomplete_crls(fleet):
    now = utcnow()
    problems = crl.check(fleet, ["int"], include_parents=True, now=now)["problems"]
    assert [(p["ca"], p["code"]) for p in problems] == [("int", "missing"), ("root", "missing")]
    crl.revoke(fleet, cas=["int", "root"], now=now)
    result = crl.check(fleet, ["int"], include_parents=True, now=now)
    assert result["problems"] == [] and result["crl_files"] == [fleet.ca_path(n, "crl.pem") for n in ("int", "root")]
    assert result["crls"][0]["number"] == 1 and result["crls"][0]["revoked_count"] == 0
    due = crl.check(fleet, ["int"], now=now + 6 * DAY)
    assert due["problems"] == [] and "is due: 24 hours left" in due["warnings"][0]
    expired = crl.check(fleet, ["int"], now=now + 8 * DAY)["problems"]
    assert [p["code"] for p in expired] == ["expired"] and "CRL has expired" in expired[0]["message"]
    # revoked in the index (by someone else) but not on the CRL
    index = fleet.load_index()
    index.current("leaf", "client1").update(status="revoked", revoked_at=pem.iso(now))
    with open(fleet.index_path, "wb") as f:
        f.write(index.dumps())
    assert [p["code"] for p in crl.check(fleet, ["int"], now=now)["problems"]] == ["content_changed"]


def test_index_keeps_the_other_records_and_fields(fleet):
    crl.revoke(fleet, names=["client2"])
    data = json.loads(fleet.read(fleet.index_path))
    assert data["version"] == 1 and len(data["issued"]) == 5  # root, int, client1, client2, web1
    assert [r["crl_number"] for r in data["issued"] if r["kind"] == "ca" and r["name"] == "int"] == [1]


def test_openssl_checks_every_level_and_rejects_the_revoked_client(fleet, tmp_path):
    """What nginx's ssl_crl does (X509_V_FLAG_CRL_CHECK_ALL): a CRL per CA level, the revoked one refused."""
    crl.revoke(fleet, names=["client2"], cas=["int"], include_parents=True)
    only_int = tmp_path / "int.crl"
    only_int.write_bytes(crl_bytes(fleet, "int"))
    both = tmp_path / "all.crl"
    both.write_bytes(crl_bytes(fleet, "int") + crl_bytes(fleet, "root"))

    def verify(name, crl_file):
        proc = subprocess.run(["openssl", "verify", "-crl_check_all", "-CAfile", fleet.ca_path("root", "cert.pem"),
                               "-untrusted", fleet.ca_path("int", "cert.pem"), "-CRLfile", str(crl_file),
                               fleet.leaf_path(name, "cert.pem")], capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    assert verify("client1", both)[0] == 0
    rc, out = verify("client2", both)
    assert rc != 0 and "certificate revoked" in out
    rc, out = verify("client1", only_int)
    assert rc != 0 and "unable to get certificate CRL" in out  # error 3: a level without its CRL
    proc = subprocess.run(["openssl", "crl", "-noout", "-CAfile", fleet.ca_path("int", "fullchain.pem"),
                           "-in", fleet.ca_path("int", "crl.pem")], capture_output=True, text=True, check=False)
    assert "verify OK" in proc.stdout + proc.stderr


def test_pkilint_finds_nothing_wrong_with_the_crl(fleet):
    lint = shutil.which("lint_crl", path=os.path.dirname(sys.executable)) or shutil.which("lint_crl")
    if not lint:
        pytest.skip("pkilint is not installed")
    crl.revoke(fleet, names=["client2"], reason="key_compromise")
    proc = subprocess.run([lint, "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", fleet.ca_path("int", "crl.pem")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
