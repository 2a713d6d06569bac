"""Recorded verdicts (verified.json): a re-run takes an up-to-date leaf from its record, without parsing its key
or certificate, only while every input of the full check is what it was.

Each failure mode is a change the full check sees and a naive fast path would not: a file replaced by another of
the same size with its mtime (and inode) kept, a key swapped, a derived file or bundle changed, the spec, the
bundle password, the index, the renewal window, the issuer, force, modes and symlinks, an edited or corrupt
record. After each change the run must give what the full check gives (verdict_off: the same run with the
records ignored).
"""

import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ansible_collections.mtls.rollout.plugins.module_utils.pki import build, csr, keys, pem, specs, verdicts
from ansible_collections.mtls.rollout.plugins.module_utils.pki.authority import Authority
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import CHANGED
from pkitest import DAY, assert_refused, by_name, issue, make_ca, snapshot, utcnow

NOW = utcnow()
P12 = {"password": "pw-one", "encryption": "modern"}
C1 = {"name": "c1", "common_name": "c1", "profile": "client", "pkcs12": P12}
C2 = {"name": "c2", "common_name": "c2", "profile": "client", "pkcs12": P12}
WEB = {"name": "web", "common_name": "web.example.com", "dns": ["web.example.com"]}
ITEMS = [C1, C2, WEB]


@pytest.fixture
def recorded(pki, monkeypatch):
    """Three leaves issued and their verdicts recorded; parsing a key or certificate is then counted."""
    issue(pki, "int", ITEMS, now=NOW)
    assert set(_entries(pki)) == {"c1", "c2", "web"}
    parsed = []
    for module, name in ((pem, "load_cert"), (keys, "from_pem")):
        real = getattr(module, name)

        def counting(data, path, *a, _real=real, _name=name, **k):
            if f"{os.sep}certs{os.sep}" in path:  # a leaf's file (CA files are parsed on every run)
                parsed.append(_name)
            return _real(data, path, *a, **k)
        monkeypatch.setattr(module, name, counting)
    pki.parsed = parsed
    return pki


def _entries(store):
    with open(os.path.join(store.root, "verified.json"), encoding="utf-8") as f:
        return json.load(f)["leaves"]


def _path(store, name, f):
    return store.leaf_path(name, f)


def _read(store, name, f):
    with open(_path(store, name, f), "rb") as fh:
        return fh.read()


def _overwrite_in_place(path, data):
    """Same size, same inode, mtime put back: what (size, mtime_ns, inode) cannot tell apart."""
    st = os.stat(path)
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def _full_check(store, items, **kw):
    """What the same run gives with no record taken (the full check)."""
    real = verdicts.Verdicts.hit
    verdicts.Verdicts.hit = lambda *a: None
    try:
        return issue(store, "int", items, **kw)
    finally:
        verdicts.Verdicts.hit = real


def outcome(results):
    return {r["name"]: (r["action"], r["reasons"]) for r in results}


def test_a_rerun_takes_every_leaf_from_its_record_and_returns_what_the_full_check_returns(recorded):
    before = snapshot(recorded.root)
    fast = issue(recorded, "int", ITEMS, now=NOW + DAY)
    assert recorded.parsed == [] and {r["action"] for r in fast} == {"unchanged"}
    assert snapshot(recorded.root) == before  # nothing written, verified.json included
    full = _full_check(recorded, ITEMS, now=NOW + DAY)
    for r in fast + full:  # as of the clock when each result was made
        r.pop("days_remaining")
        r["before"].pop("days_remaining")
    assert fast == full


def test_first_rerun_after_a_full_check_is_fast_too(recorded):
    os.unlink(os.path.join(recorded.root, "verified.json"))
    issue(recorded, "int", ITEMS, now=NOW)  # full check, records again
    recorded.parsed.clear()
    issue(recorded, "int", ITEMS, now=NOW)
    assert recorded.parsed == []


def test_a_certificate_replaced_in_place_by_another_of_the_same_size_is_seen(recorded):
    """Another valid certificate from the same CA for the same key, with another common name, same size."""
    path = _path(recorded, "c1", "cert.pem")
    auth = Authority(recorded, "int")
    key = keys.from_pem(_read(recorded, "c1", "key.pem"), "")
    spec = specs.leaf_spec(dict(C1, common_name="c9"))
    for _attempt in range(200):  # serial and signature lengths vary: find one of the same size
        other = build.leaf_certificate(spec, key.public_key(), auth.cert, auth.key, x509.random_serial_number(),
                                       NOW - DAY, NOW + 300 * DAY)
        if len(pem.to_pem(other)) == os.stat(path).st_size:
            break
    _overwrite_in_place(path, pem.to_pem(other))
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert outcome([got["c1"]]) == {"c1": ("renewed", ["spec_changed: subject"])}


def test_a_key_swapped_in_place_is_seen(recorded):
    _overwrite_in_place(_path(recorded, "c1", "key.pem"), _read(recorded, "c2", "key.pem"))
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert got["c1"]["action"] == "renewed" and "key_mismatch" in got["c1"]["reasons"]


@pytest.mark.parametrize("filename", ["chain.pem", "ca.pem"])
def test_a_derived_file_changed_in_place_is_rewritten(recorded, filename):
    path = _path(recorded, "web", filename)
    data = bytearray(_read(recorded, "web", filename))
    data[40] ^= 1  # one bit inside the base64
    _overwrite_in_place(path, bytes(data))
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert outcome([got["web"]]) == {"web": ("updated", [f"{filename} out of date"])}
    assert _read(recorded, "web", filename) != bytes(data)


def test_a_removed_file_is_put_back(recorded):
    os.unlink(_path(recorded, "web", "fullchain.pem"))
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert outcome([got["web"]]) == {"web": ("updated", ["fullchain.pem out of date"])}


def test_a_bundle_swapped_for_another_leafs_is_rewritten(recorded):
    mine, other = _read(recorded, "c1", "bundle.p12"), _read(recorded, "c2", "bundle.p12")
    path = _path(recorded, "c1", "bundle.p12")
    if len(other) == len(mine):
        _overwrite_in_place(path, other)
    else:
        with open(path, "wb") as f:
            f.write(other)
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert outcome([got["c1"]]) == {"c1": ("updated", ["bundle.p12 out of date"])}


def test_a_changed_spec_is_seen(recorded):
    items = [C1, C2, dict(WEB, dns=["web.example.com", "www.example.com"])]
    got = by_name(issue(recorded, "int", items, now=NOW))
    assert got["web"]["action"] == "renewed" and got["web"]["reasons"] == ["spec_changed: dns"]


def test_a_new_bundle_password_rewrites_the_bundle(recorded):
    items = [dict(C1, pkcs12=dict(P12, password="pw-two")), C2, WEB]
    got = by_name(issue(recorded, "int", items, now=NOW))
    assert outcome([got["c1"]]) == {"c1": ("updated", ["bundle.p12 out of date"])}
    assert "pw-two" not in open(os.path.join(recorded.root, "verified.json"), encoding="utf-8").read()


@pytest.mark.parametrize("edit", ["sha256", "cert", "removed"])
def test_bundle_metadata_edited_in_the_index_rewrites_the_bundle(recorded, edit):
    with open(recorded.index_path, encoding="utf-8") as f:
        index = json.load(f)
    if edit == "removed":
        del index["bundles"]["c1"]
    else:
        index["bundles"]["c1"][edit] = "00"
    with open(recorded.index_path, "w", encoding="utf-8") as f:
        json.dump(index, f)
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert outcome([got["c1"]]) == {"c1": ("updated", ["bundle.p12 out of date"])}


def test_a_certificate_the_index_lost_is_recorded_again(recorded):
    with open(recorded.index_path, encoding="utf-8") as f:
        index = json.load(f)
    serial = by_name(issue(recorded, "int", ITEMS, now=NOW))["web"]["serial"]
    index["issued"] = [r for r in index["issued"] if r["serial"] != serial]
    with open(recorded.index_path, "w", encoding="utf-8") as f:
        json.dump(index, f)
    issue(recorded, "int", ITEMS, now=NOW)
    assert recorded.load_index().has_serial("int", serial)


def test_a_leaf_inside_its_renewal_window_is_renewed(recorded):
    got = by_name(issue(recorded, "int", ITEMS, now=NOW + 300 * DAY))
    assert got["web"]["action"] == "renewed" and got["web"]["reasons"][0].startswith("due")


def test_a_larger_task_renewal_window_renews(recorded):
    got = by_name(issue(recorded, "int", ITEMS, now=NOW, renew_before_days=400))
    assert {r["action"] for r in got.values()} == {"renewed"}


def test_an_issuer_with_a_new_key_renews_its_leaves(recorded):
    make_ca(recorded, "int", "root", force=True, rotate_key=True)
    got = by_name(issue(recorded, "int", ITEMS, now=NOW))
    assert {r["action"] for r in got.values()} == {"renewed"}
    assert all(r["reasons"] == ["issuer_changed"] for r in got.values())


@pytest.mark.parametrize("where", ["task", "item"])
def test_force_renews(recorded, where):
    items = [dict(WEB, force=True), C1, C2] if where == "item" else ITEMS
    got = by_name(issue(recorded, "int", items, now=NOW, force=where == "task"))
    assert got["web"]["action"] == "renewed" and got["web"]["reasons"] == ["forced"]


def test_a_key_open_to_others_is_refused(recorded):
    os.chmod(_path(recorded, "c1", "key.pem"), 0o644)
    assert_refused(recorded, lambda: issue(recorded, "int", ITEMS, now=NOW), "0644", code="mode")


def test_a_leaf_directory_open_to_others_is_refused(recorded):
    os.chmod(_path(recorded, "c1", ""), 0o755)
    assert_refused(recorded, lambda: issue(recorded, "int", ITEMS, now=NOW), "0755", code="mode")


def test_a_symlinked_certificate_is_refused(recorded):
    path = _path(recorded, "web", "cert.pem")
    os.rename(path, path + ".real")
    os.symlink(path + ".real", path)
    assert_refused(recorded, lambda: issue(recorded, "int", ITEMS, now=NOW), "symlink", code="symlink")


def test_an_edited_record_is_not_taken(recorded):
    path = os.path.join(recorded.root, "verified.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data["leaves"]["web"]["not_after"] += 400 * 86400  # would keep a due leaf from renewal
    data["leaves"]["web"]["facts"]["not_after"] = "2099-01-01T00:00:00Z"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    got = by_name(issue(recorded, "int", ITEMS, now=NOW + 300 * DAY))
    assert got["web"]["action"] == "renewed" and got["web"]["reasons"][0].startswith("due")


def test_a_corrupt_record_file_means_a_full_check_and_is_rewritten(recorded):
    path = os.path.join(recorded.root, "verified.json")
    with open(path, "wb") as f:
        f.write(b"{not json")
    assert {r["action"] for r in issue(recorded, "int", ITEMS, now=NOW)} == {"unchanged"}
    assert recorded.parsed and set(_entries(recorded)) == {"c1", "c2", "web"}
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_records_of_other_code_are_not_taken(recorded, monkeypatch):
    monkeypatch.setattr(verdicts, "VERSION", verdicts.VERSION + 1)
    issue(recorded, "int", ITEMS, now=NOW)
    assert recorded.parsed


def test_check_mode_takes_records_but_writes_none(recorded):
    os.unlink(os.path.join(recorded.root, "verified.json"))
    before = snapshot(recorded.root)
    assert {r["action"] for r in issue(recorded, "int", ITEMS, now=NOW, check=True)} == {"unchanged"}
    assert snapshot(recorded.root) == before


def make_csr(key):
    return x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")])).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def test_host_keys_are_never_recorded(pki):
    """A host key's verdict depends on the host's report (its key, the certificate it holds): never recorded."""
    key = keys.generate(keys.key_spec("ec"))
    host = dict(WEB, key_location="host")
    issue(pki, "int", [C1, host], now=NOW, reports={"web": csr.host_report("web", make_csr(key))})
    assert set(_entries(pki)) == {"c1"}


def test_a_file_read_twice_with_two_contents_has_no_digest(store, tmp_path):
    path = store.leaf_path("x", "cert.pem")
    os.makedirs(os.path.dirname(path), mode=0o700)
    store.digests = {}
    for content in (b"one", b"two"):
        with open(path, "wb") as f:
            f.write(content)
        store.read(path)
    assert store.digests[path] == CHANGED


def test_an_issuer_reissued_with_its_key_updates_the_chain_files(recorded):
    make_ca(recorded, "int", "root", force=True)
    got = issue(recorded, "int", ITEMS, now=NOW)
    assert {r["action"] for r in got} == {"updated"}
    assert all("chain.pem out of date" in r["reasons"] for r in got)
