"""Renewal policy: nothing is re-issued without a reason, every re-issue names its reason, check mode
predicts exactly what a real run does, keys are kept unless asked otherwise, derived files follow."""

import os
import shutil

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12

from ansible_collections.mtls.rollout.plugins.module_utils.pki import authority, build, keys, pem, pkcs12
from pkitest import (DAY, assert_refused, by_name, ca_cert, issue, leaf_cert, make_ca, public, read_certs, read_key,
                     snapshot, temp_files, utcnow)

WEB = {"name": "web", "common_name": "web.example.com", "ip": ["10.0.0.1"]}
ALICE = {"name": "alice", "profile": "client", "common_name": "alice"}
BASE = [WEB, ALICE]
NOW = utcnow()


@pytest.fixture
def issued(pki):
    issue(pki, "int", BASE, now=NOW)
    return pki


def outcome(results):
    return {r["name"]: (r["action"], r["reasons"]) for r in results}


def key_bytes(store, name):
    return open(store.leaf_path(name, "key.pem"), "rb").read()


def test_second_run_is_unchanged_and_does_no_crypto_work(pki, monkeypatch):
    items = [WEB, ALICE, {"name": "p12", "profile": "client", "common_name": "p12", "pkcs12": {"password": "pw"}}]
    first = issue(pki, "int", items, now=NOW)
    assert {r["action"] for r in first} == {"issued"}
    before = snapshot(pki.root)

    def boom(*a, **k):
        raise AssertionError("crypto work on a second run")
    monkeypatch.setattr(keys, "generate", boom)
    monkeypatch.setattr(build, "leaf_certificate", boom)
    monkeypatch.setattr(pkcs12, "bundle", boom)
    monkeypatch.setattr(authority.Authority, "key", property(boom))  # the CA key is not even decrypted
    second = issue(pki, "int", items, now=NOW + DAY)
    assert outcome(second) == {n: ("unchanged", []) for n in ("web", "alice", "p12")}
    assert not any(r["changed"] for r in second)
    assert [r["serial"] for r in second] == [r["serial"] for r in first]
    assert snapshot(pki.root) == before


# --- why a leaf is re-issued: (mutate the store / the spec) -> (action, reasons) for 'web' ---------------

def _other_key(store, name, spec="ec"):
    with open(store.leaf_path(name, "key.pem"), "wb") as f:
        f.write(keys.to_pem(keys.generate(keys.key_spec(spec))))


def _recreate_int(store):
    shutil.rmtree(store.ca_path("int"))
    make_ca(store, "int", "root", now=NOW)


def _shorten_int(store):
    make_ca(store, "int", "root", valid_days=100, force=True, now=NOW)


NOT_AFTER = NOW + 365 * DAY

# name: (mutation, web item overrides, run kwargs, web (action, reasons), alice (action, reasons) or None = unchanged,
#        key kept, settles (a third run is unchanged))
SCENARIOS = {
    "missing": (lambda s: os.unlink(s.leaf_path("web", "cert.pem")), {}, {}, ("issued", ["missing"]), None, True, True),
    "unreadable": (lambda s: open(s.leaf_path("web", "cert.pem"), "wb").write(b"-----BEGIN CERTIFICATE-----\nx\n"),
                   {}, {}, ("renewed", ["unreadable"]), None, True, True),
    "key_mismatch": (lambda s: _other_key(s, "web"), {}, {}, ("renewed", ["key_mismatch"]), None, False, True),
    "key_missing": (lambda s: os.unlink(s.leaf_path("web", "key.pem")), {}, {}, ("renewed", ["key_missing"]), None,
                    False, True),
    "dns": (None, {"dns": ["alt.example.com"]}, {}, ("renewed", ["spec_changed: dns"]), None, True, True),
    "ip": (None, {"ip": ["10.0.0.2"]}, {}, ("renewed", ["spec_changed: ip"]), None, True, True),
    "email": (None, {"email": ["ops@example.com"]}, {}, ("renewed", ["spec_changed: email"]), None, True, True),
    "profile": (None, {"profile": "both"}, {}, ("renewed", ["spec_changed: profile"]), None, True, True),
    "subject": (None, {"organization": "Acme"}, {}, ("renewed", ["spec_changed: subject"]), None, True, True),
    "common_name": (None, {"common_name": "www.example.com"}, {}, ("renewed", ["spec_changed: dns, subject"]), None,
                    True, True),
    "key_type": (None, {"key_type": "rsa", "key_size": 2048}, {}, ("renewed", ["spec_changed: key_type"]), None,
                 False, True),
    "curve": (None, {"curve": "P-384"}, {}, ("renewed", ["spec_changed: key_type"]), None, False, True),
    "issuer_changed": (_recreate_int, {}, {}, ("renewed", ["issuer_changed"]), ("renewed", ["issuer_changed"]),
                       True, True),
    "outlives_issuer": (_shorten_int, {}, {}, ("renewed", ["outlives_issuer"]), ("renewed", ["outlives_issuer"]),
                        True, True),
    "renew_before_days": (None, {}, {"renew_before_days": 300, "now": NOW + 100 * DAY},
                          ("renewed", ["due: 265 days left"]), ("renewed", ["due: 265 days left"]), True, False),
    "item_renew_before_days": (None, {"renew_before_days": 300}, {"now": NOW + 100 * DAY},
                               ("renewed", ["due: 265 days left"]), None, True, False),
    "due_default_window": (None, {}, {"now": NOT_AFTER - 100 * DAY}, ("renewed", ["due: 100 days left"]),
                           ("renewed", ["due: 100 days left"]), True, True),
    "due_hours": (None, {}, {"now": NOT_AFTER - DAY / 2}, ("renewed", ["due: 12 hours left"]),
                  ("renewed", ["due: 12 hours left"]), True, True),
    "expired": (None, {}, {"now": NOT_AFTER + DAY}, ("renewed", ["expired"]), ("renewed", ["expired"]), True, True),
    "forced": (None, {}, {"force": True}, ("renewed", ["forced"]), ("renewed", ["forced"]), True, False),
    "item_forced": (None, {"force": True}, {}, ("renewed", ["forced"]), None, True, False),
    "rotate_key": (None, {"force": True, "rotate_key": True}, {}, ("renewed", ["forced"]), None, False, False),
    "two_reasons": (lambda s: _other_key(s, "web"), {"ip": []}, {"force": True},
                    ("renewed", ["key_mismatch", "spec_changed: ip", "forced"]), ("renewed", ["forced"]), False, False),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_reissue_reason_check_mode_and_key_policy(issued, name):
    mutate, web_over, kwargs, web_expect, alice_expect, key_kept, settles = SCENARIOS[name]
    store = issued
    if mutate:
        mutate(store)
    items = [{**WEB, **web_over}, ALICE]
    kwargs = {"now": NOW, **kwargs}
    key_path = store.leaf_path("web", "key.pem")
    key_before = read_key(key_path) if os.path.exists(key_path) else None
    alice_serial = leaf_cert(store, "alice").serial_number

    # check mode: the same actions and reasons, and not one byte (or mode) of the store changes
    before = snapshot(store.root)
    predicted = issue(store, "int", items, check=True, **kwargs)
    assert snapshot(store.root) == before
    expected = {"web": web_expect, "alice": alice_expect or ("unchanged", [])}
    assert outcome(predicted) == expected

    results = issue(store, "int", items, **kwargs)
    assert outcome(results) == expected
    assert by_name(results)["web"]["reason"] == "; ".join(web_expect[1])
    web = leaf_cert(store, "web")
    key_now = read_key(store.leaf_path("web", "key.pem"))
    assert public(web) == public(key_now)
    if key_kept and key_before is not None:
        assert public(key_now) == public(key_before), "the key must be kept on renewal"
    else:
        assert key_before is None or public(key_now) != public(key_before), "a new key was expected"
    assert web.issuer == ca_cert(store, "int").subject
    web.verify_directly_issued_by(ca_cert(store, "int"))
    if alice_expect is None:
        assert leaf_cert(store, "alice").serial_number == alice_serial
    assert not temp_files(store.root)
    # the renewed certificate is recorded, the old one superseded
    index = store.load_index()
    records = [r for r in index.records if r["name"] == "web"]
    assert records[-1]["serial"] == pem.serial_hex(web) and records[-1]["status"] == "valid"
    assert records[-1]["reason"] == "; ".join(web_expect[1])
    assert all(r["status"] == "superseded" for r in records[:-1])
    if settles:
        assert outcome(issue(store, "int", items, **kwargs)) == {"web": ("unchanged", []), "alice": ("unchanged", [])}


def test_key_type_change_result_flags(issued):
    result = by_name(issue(issued, "int", [{**WEB, "key_type": "ed25519"}], now=NOW))["web"]
    assert result["key_rotated"] is True and result["before"]["serial"] != result["serial"]
    assert keys.spec_of(read_key(issued.leaf_path("web", "key.pem"))) == keys.KeySpec("ed25519")
    result = by_name(issue(issued, "int", [{**WEB, "key_type": "ed25519", "force": True}], now=NOW))["web"]
    assert result["key_rotated"] is False


def test_default_window_is_the_last_third(issued):
    # 365-day certificate: renewed with 121.67 days left or fewer, not before
    assert outcome(issue(issued, "int", BASE, now=NOT_AFTER - 122 * DAY))["web"] == ("unchanged", [])
    assert outcome(issue(issued, "int", BASE, now=NOT_AFTER - 121 * DAY))["web"] == ("renewed", ["due: 121 days left"])


def test_renew_before_days_zero_means_only_when_expired(issued):
    assert outcome(issue(issued, "int", BASE, renew_before_days=0, now=NOT_AFTER - DAY))["web"] == ("unchanged", [])
    assert outcome(issue(issued, "int", BASE, renew_before_days=0, now=NOT_AFTER))["web"] == ("renewed", ["expired"])


def test_unreadable_cert_key_is_kept_byte_for_byte(issued):
    key = key_bytes(issued, "web")
    with open(issued.leaf_path("web", "cert.pem"), "wb") as f:
        f.write(b"garbage")
    issue(issued, "int", BASE, now=NOW)
    assert key_bytes(issued, "web") == key


def test_check_mode_with_pending_issue_reports_no_new_serial(issued):
    result = by_name(issue(issued, "int", BASE, force=True, check=True, now=NOW))["web"]
    assert result["changed"] and "serial" not in result
    assert result["before"]["serial"] == pem.serial_hex(leaf_cert(issued, "web"))


def test_check_mode_for_new_leaves_in_a_fresh_store(pki):
    before = snapshot(pki.root)
    results = issue(pki, "int", BASE, check=True)
    assert outcome(results) == {"web": ("issued", ["missing"]), "alice": ("issued", ["missing"])}
    assert snapshot(pki.root) == before


# --- derived files ---------------------------------------------------------------------------------

def test_issuer_renewed_same_key_updates_chain_files_only(issued):
    items = [WEB, {**ALICE, "pkcs12": {"password": "pw"}}]
    issue(issued, "int", items, now=NOW)
    serials = {n: leaf_cert(issued, n).serial_number for n in ("web", "alice")}
    bundle_before = open(issued.leaf_path("alice", "bundle.p12"), "rb").read()
    assert make_ca(issued, "int", "root", force=True, now=NOW)["action"] == "renewed"
    new_int = ca_cert(issued, "int")

    predicted = issue(issued, "int", items, check=True, now=NOW)
    results = issue(issued, "int", items, now=NOW)
    assert outcome(predicted) == outcome(results) == {
        "web": ("updated", ["chain.pem out of date", "fullchain.pem out of date"]),
        "alice": ("updated", ["chain.pem out of date", "fullchain.pem out of date", "bundle.p12 out of date"])}
    assert {n: leaf_cert(issued, n).serial_number for n in ("web", "alice")} == serials  # not re-issued
    assert read_certs(issued.leaf_path("web", "chain.pem")) == [new_int]
    assert read_certs(issued.leaf_path("web", "fullchain.pem")) == [leaf_cert(issued, "web"), new_int]
    # the bundle carries the chain too, so it follows the renewed intermediate
    bundle = open(issued.leaf_path("alice", "bundle.p12"), "rb").read()
    assert bundle != bundle_before
    assert crypto_pkcs12.load_pkcs12(bundle, b"pw").additional_certs[0].certificate == new_int
    assert outcome(issue(issued, "int", items, now=NOW)) == {"web": ("unchanged", []), "alice": ("unchanged", [])}


def test_root_renewed_updates_ca_pem_and_intermediate_chain(issued):
    make_ca(issued, "root", force=True, now=NOW)
    inter = make_ca(issued, "int", "root", now=NOW)
    assert (inter["action"], inter["reasons"]) == ("updated", ["chain_updated"])
    assert read_certs(issued.ca_path("int", "chain.pem")) == [ca_cert(issued, "root")]
    results = issue(issued, "int", BASE, now=NOW)
    assert outcome(results) == {n: ("updated", ["ca.pem out of date"]) for n in ("web", "alice")}
    assert read_certs(issued.leaf_path("web", "ca.pem")) == [ca_cert(issued, "root")]


def test_deleted_derived_file_is_restored(issued):
    os.unlink(issued.leaf_path("web", "fullchain.pem"))
    results = issue(issued, "int", BASE, now=NOW)
    assert outcome(results)["web"] == ("updated", ["fullchain.pem out of date"])
    assert read_certs(issued.leaf_path("web", "fullchain.pem"))[0] == leaf_cert(issued, "web")


# --- PKCS#12 bundles ----------------------------------------------------------------------------------

PBES2, TRIPLE_DES = bytes.fromhex("2a864886f70d01050d"), bytes.fromhex("2a864886f70d010c0103")  # DER OIDs


def bundle_of(store, name="alice"):
    with open(store.leaf_path(name, "bundle.p12"), "rb") as f:
        return f.read()


def alice(**p12):
    return [WEB, {**ALICE, "pkcs12": {"password": "pw", **p12}}]


def test_pkcs12_unchanged_bundle_not_rebuilt(issued):
    issue(issued, "int", alice(), now=NOW)
    data = bundle_of(issued)
    meta = issued.load_index().bundles["alice"]
    assert meta["encryption"] == "modern" and "pw" not in str(meta)  # settings only as a salted HMAC
    assert outcome(issue(issued, "int", alice(), now=NOW))["alice"] == ("unchanged", [])
    assert bundle_of(issued) == data


@pytest.mark.parametrize("change", [{"password": "new"}, {"encryption": "compat"}, {"friendly_name": "Alice's"},
                                    {"include_chain": False}])
def test_pkcs12_settings_change_rebuilds(issued, change):
    issue(issued, "int", alice(), now=NOW)
    data = bundle_of(issued)
    serial = leaf_cert(issued, "alice").serial_number
    predicted = issue(issued, "int", alice(**change), check=True, now=NOW)
    assert bundle_of(issued) == data
    results = issue(issued, "int", alice(**change), now=NOW)
    assert outcome(predicted)["alice"] == outcome(results)["alice"] == ("updated", ["bundle.p12 out of date"])
    assert leaf_cert(issued, "alice").serial_number == serial
    new = bundle_of(issued)
    assert new != data
    password = change.get("password", "pw").encode()
    p12 = crypto_pkcs12.load_pkcs12(new, password)
    assert p12.cert.certificate == leaf_cert(issued, "alice")
    if "password" in change:
        with pytest.raises(ValueError):
            crypto_pkcs12.load_pkcs12(new, b"pw")
    if "encryption" in change:
        assert TRIPLE_DES in new and PBES2 not in new
        assert PBES2 in data and TRIPLE_DES not in data
    if "friendly_name" in change:
        assert p12.cert.friendly_name == b"Alice's"
    if "include_chain" in change:
        assert p12.additional_certs == []
    assert outcome(issue(issued, "int", alice(**change), now=NOW))["alice"] == ("unchanged", [])


def test_pkcs12_removed_when_option_dropped(issued):
    issue(issued, "int", alice(), now=NOW)
    before = snapshot(issued.root)
    assert outcome(issue(issued, "int", BASE, check=True, now=NOW))["alice"] == ("updated", ["bundle.p12 out of date"])
    assert snapshot(issued.root) == before
    results = issue(issued, "int", BASE, now=NOW)
    assert outcome(results)["alice"] == ("updated", ["bundle.p12 out of date"])
    assert not os.path.exists(issued.leaf_path("alice", "bundle.p12"))
    assert "alice" not in issued.load_index().bundles
    assert "pkcs12" not in by_name(results)["alice"]["paths"]
    assert outcome(issue(issued, "int", BASE, now=NOW))["alice"] == ("unchanged", [])


@pytest.mark.parametrize("damage", ["delete", "tamper"])
def test_pkcs12_damaged_bundle_rebuilt(issued, damage):
    issue(issued, "int", alice(), now=NOW)
    path = issued.leaf_path("alice", "bundle.p12")
    if damage == "delete":
        os.unlink(path)
    else:
        with open(path, "ab") as f:
            f.write(b"\0")
    assert outcome(issue(issued, "int", alice(), now=NOW))["alice"] == ("updated", ["bundle.p12 out of date"])
    assert crypto_pkcs12.load_pkcs12(bundle_of(issued), b"pw").cert.certificate == leaf_cert(issued, "alice")


def test_pkcs12_follows_a_renewed_certificate(issued):
    issue(issued, "int", alice(), now=NOW)
    results = issue(issued, "int", alice(), force=True, now=NOW)
    assert outcome(results)["alice"] == ("renewed", ["forced"])
    assert crypto_pkcs12.load_pkcs12(bundle_of(issued), b"pw").cert.certificate == leaf_cert(issued, "alice")


# --- CA renewal -------------------------------------------------------------------------------------

def ca_outcome(result):
    return result["action"], result["reasons"]


CA_SCENARIOS = {
    "subject": ({"subject": {"common_name": "int", "organization": "Acme"}}, {}, ["spec_changed: subject"], True),
    "path_length": ({"path_length": 0}, {}, ["spec_changed: path_length"], True),
    "name_constraints": ({"name_constraints_data": {"permitted_dns": ["example.com"]}}, {},
                         ["spec_changed: name_constraints"], True),
    "key_type": ({"key_type": "ec", "curve": "P-384"}, {}, ["spec_changed: key_type"], False),
    "forced": ({}, {"force": True}, ["forced"], True),
    "rotate_key": ({"rotate_key": True}, {"force": True}, ["forced"], False),
    "due": ({}, {"now": NOW + 1300 * DAY}, ["due: 525 days left"], True),
    "renew_before_days": ({"renew_before_days": 1800}, {"now": NOW + 100 * DAY}, ["due: 1725 days left"], True),
}


@pytest.mark.parametrize("name", list(CA_SCENARIOS))
def test_ca_reissue_reasons_and_check_mode(store, name):
    spec_over, kwargs, reasons, key_kept = CA_SCENARIOS[name]
    make_ca(store, "root", now=NOW)
    make_ca(store, "int", "root", now=NOW)
    key_before = read_key(store.ca_path("int", "key.pem"))
    kwargs = {"now": NOW, **kwargs}
    before = snapshot(store.root)
    predicted = make_ca(store, "int", "root", check=True, **spec_over, **kwargs)
    assert snapshot(store.root) == before
    result = make_ca(store, "int", "root", **spec_over, **kwargs)
    assert ca_outcome(predicted) == ca_outcome(result) == ("renewed", reasons)
    assert (public(read_key(store.ca_path("int", "key.pem"))) == public(key_before)) is key_kept
    cert = ca_cert(store, "int")
    assert public(cert) == public(read_key(store.ca_path("int", "key.pem")))
    cert.verify_directly_issued_by(ca_cert(store, "root"))


def test_root_recreated_means_issuer_changed_for_intermediate(pki):
    shutil.rmtree(pki.ca_path("root"))
    make_ca(pki, "root")
    predicted = make_ca(pki, "int", "root", check=True)
    result = make_ca(pki, "int", "root")
    assert ca_outcome(predicted) == ca_outcome(result) == ("renewed", ["issuer_changed"])
    assert pem.aki(ca_cert(pki, "int")) == pem.ski(ca_cert(pki, "root"))


def test_ca_due_default_window(store):
    make_ca(store, "root", now=NOW)
    end = ca_cert(store, "root").not_valid_after_utc
    assert make_ca(store, "root", now=end - 1217 * DAY)["action"] == "unchanged"  # 3650 / 3 = 1216.7
    assert ca_outcome(make_ca(store, "root", now=end - 1216 * DAY)) == ("renewed", ["due: 1216 days left"])


def test_ca_key_mismatch_is_detected(pki):
    with open(pki.ca_path("int", "key.pem"), "wb") as f:
        f.write(keys.to_pem(keys.generate(keys.key_spec())))
    key = read_key(pki.ca_path("int", "key.pem"))
    result = make_ca(pki, "int", "root")
    assert ca_outcome(result) == ("renewed", ["key_mismatch"])
    assert public(ca_cert(pki, "int")) == public(key)
    # a CA key that does not match its certificate is never used to sign a leaf
    with open(pki.ca_path("int", "key.pem"), "wb") as f:
        f.write(keys.to_pem(keys.generate(keys.key_spec())))
    assert_refused(pki, lambda: issue(pki, "int", [WEB]), pki.ca_path("int", "key.pem"), "does not match",
                   code="key_mismatch")


def test_due_intermediate_renewed_with_overlap_old_leaves_keep_verifying(store):
    """An intermediate inside its renewal window is re-issued with the same key and subject, so leaves
    issued under the old certificate still verify against the new one (overlap), and no leaf outlives it."""
    import datetime as dt
    import subprocess
    from pkitest import issue, make_ca, utcnow
    now = utcnow()
    make_ca(store, "root", now=now - dt.timedelta(days=400))
    make_ca(store, "int", "root", valid_days=450, now=now - dt.timedelta(days=400))  # 50 days left: due
    issue(store, "int", [{"name": "old", "profile": "client", "common_name": "old", "valid_days": 30}], now=now)
    old_leaf = open(store.leaf_path("old", "cert.pem"), "rb").read()
    result = make_ca(store, "int", "root", valid_days=450, now=now)
    assert result["action"] == "renewed" and result["reason"].startswith("due:")
    new_int = store.ca_path("int", "cert.pem")
    leaf_file = store.ca_path("int", "old-leaf.pem")
    with open(leaf_file, "wb") as f:
        f.write(old_leaf)
    proc = subprocess.run(["openssl", "verify", "-CAfile", store.ca_path("root", "cert.pem"), "-untrusted", new_int,
                           leaf_file], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    leaves = issue(store, "int", [{"name": "new", "profile": "client", "common_name": "new", "valid_days": 900}])
    assert leaves[0]["not_after"] <= result["not_after"] and leaves[0]["warnings"]
