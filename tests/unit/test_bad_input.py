"""Bad inputs and bad state: every refusal names the bad value, and the store stays byte-for-byte unchanged."""

import os

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from pkitest import DAY, assert_refused, issue, make_ca, snapshot, utcnow

GOOD = {"name": "good", "dns": "good.example.com"}


@pytest.fixture
def populated(pki):
    """root -> int with two leaves, so 'unchanged' means something."""
    issue(pki, "int", [GOOD, {"name": "alice", "profile": "client", "common_name": "alice"}])
    return pki


@pytest.mark.parametrize("item, needles", [
    ({"name": "w", "ip": ["10.0.0.1", "999.1.1.1"]}, ["invalid IP address '999.1.1.1'"]),
    ({"name": "w", "dns": ["ok.example.com", "bad_name.example.com"]}, ["'bad_name.example.com'", "label 'bad_name'"]),
    ({"name": "w", "dns": "-x.example.com"}, ["'-x.example.com'"]),
    ({"name": "w", "dns": "a..b"}, ["'a..b'"]),
    ({"name": "w", "dns": "www.*.example.com"}, ["'www.*.example.com'", "left-most label"]),
    ({"name": "w", "dns": "*.com"}, ["'*.com'", "two labels after it"]),
    ({"name": "w", "dns": "foo*.example.com"}, ["'foo*.example.com'", "left-most label"]),
    ({"name": "w", "dns": "w.example.com", "key_type": "dsa"}, ["unknown key_type 'dsa'", "ec, rsa, ed25519"]),
    ({"name": "w", "dns": "w.example.com", "key_type": "rsa", "key_size": 1024}, ["key_size 1024", "at least 2048"]),
    ({"name": "w", "dns": "w.example.com", "profile": "webserver"}, ["unknown profile 'webserver'",
                                                                     "server, client, both"]),
    ({"name": "w", "profile": "client", "common_name": "c", "email": "not-mail"}, ["'not-mail'"]),
    ({"name": "../x", "dns": "w.example.com"}, ["invalid certificate name '../x'"]),
    ({"name": "a/b", "dns": "w.example.com"}, ["invalid certificate name 'a/b'"]),
    ({"name": "..", "dns": "w.example.com"}, ["invalid certificate name '..'"]),
    ({"name": "/etc/passwd", "dns": "w.example.com"}, ["invalid certificate name '/etc/passwd'"]),
    ({"name": "w", "dns": "w.example.com", "pkcs12": {"encryption": "aes"}}, ["unknown pkcs12 encryption 'aes'"]),
])
def test_bad_leaf_item_refused(populated, item, needles):
    # the good item in the same list is not issued either: validation happens before any work
    error = assert_refused(populated, lambda: issue(populated, "int", [{"name": "new", "dns": "new.example.com"},
                                                                       item]), *needles)
    assert error.code == "invalid"
    assert not os.path.exists(populated.leaf_path("new"))


def test_escaping_names_never_touch_the_filesystem(populated, tmp_path):
    outside = tmp_path / "x"
    for name in ("../x", "../../x", "certs/../../x"):
        assert_refused(populated, lambda: issue(populated, "int", [{"name": name, "dns": "w.example.com"}]), repr(name))
        assert_refused(populated, lambda: make_ca(populated, name, "root"), repr(name))
    assert not outside.exists()


def test_duplicate_names_in_one_list(populated):
    items = [{"name": "dup", "dns": "a.example.com"}, GOOD, {"name": "dup", "dns": "b.example.com"}]
    assert_refused(populated, lambda: issue(populated, "int", items), "'dup' appears twice")


def test_unknown_issuer(populated):
    assert_refused(populated, lambda: issue(populated, "nope", [GOOD]), "issuer 'nope' does not exist",
                   "existing CAs: int, root", code="no_issuer")


def test_issuer_in_an_empty_store(store):
    with pytest.raises(PkiError, match="issuer 'root' does not exist") as info:
        issue(store, "root", [GOOD])
    assert info.value.code == "no_issuer"
    # the run took the store's lock (so it may create pki_dir), nothing else
    assert snapshot(store.root) == {}


def test_issuer_that_is_a_leaf(populated):
    assert_refused(populated, lambda: issue(populated, "good", [{"name": "x", "dns": "x.example.com"}]),
                   "issuer 'good' is not a CA", populated.leaf_path("good"), code="not_a_ca")


def test_issuer_whose_files_are_a_leaf_certificate(populated):
    # a CA directory holding a certificate without CA:TRUE is refused too
    os.makedirs(populated.ca_path("fake"), mode=0o700)
    with open(populated.leaf_path("good", "cert.pem"), "rb") as src:
        leaf = src.read()
    with open(populated.ca_path("fake", "cert.pem"), "wb") as dst:
        dst.write(leaf)
    assert_refused(populated, lambda: issue(populated, "fake", [{"name": "x", "dns": "x.example.com"}]),
                   "issuer 'fake' is not a CA", "basicConstraints", code="not_a_ca")


def test_issuer_past_expiry(store):
    past = utcnow() - 400 * DAY
    make_ca(store, "root", now=past)
    make_ca(store, "old", "root", valid_days=30, now=past)
    issue(store, "old", [GOOD], now=past)
    assert_refused(store, lambda: issue(store, "old", [{"name": "x", "dns": "x.example.com"}]),
                   "issuer 'old' cannot issue", "CN=old expired on", code="issuer_expired")
    # and renewing the expired leaf under it is refused the same way, leaving the old files alone
    assert_refused(store, lambda: issue(store, "old", [GOOD]), "issuer 'old'", code="issuer_expired")


def test_issuer_whose_root_expired(store):
    past = utcnow() - 400 * DAY
    make_ca(store, "root", valid_days=60, now=past)
    make_ca(store, "int", "root", now=past)  # clipped to the root's 60 days
    assert_refused(store, lambda: issue(store, "int", [GOOD]), "cannot issue", code="issuer_expired")


def test_issuer_not_yet_valid(store):
    make_ca(store, "root", now=utcnow() + 30 * DAY)
    assert_refused(store, lambda: issue(store, "root", [GOOD]), "not valid before", code="issuer_not_yet_valid")


def test_wrong_ca_passphrase(store):
    make_ca(store, "root", passphrase="right")
    key_path = store.ca_path("root", "key.pem")
    assert_refused(store, lambda: issue(store, "root", [GOOD], passphrase="wrong"), f"wrong passphrase for {key_path}",
                   code="bad_passphrase")
    assert_refused(store, lambda: make_ca(store, "int", "root", issuer_passphrase="wrong"),
                   f"wrong passphrase for {key_path}", code="bad_passphrase")
    assert_refused(store, lambda: make_ca(store, "root", passphrase="wrong"), key_path, code="bad_passphrase")


def test_corrupted_ca_certificate(populated):
    path = populated.ca_path("int", "cert.pem")
    with open(path, "wb") as f:
        f.write(b"-----BEGIN CERTIFICATE-----\nMIIBroken\n-----END CERTIFICATE-----\n")
    for call in (lambda: issue(populated, "int", [GOOD]), lambda: make_ca(populated, "int", "root"),
                 lambda: make_ca(populated, "sub", "int")):
        assert_refused(populated, call, path, "not a readable PEM certificate", code="corrupt")


def test_corrupted_ca_chain(populated):
    path = populated.ca_path("int", "chain.pem")
    with open(populated.ca_path("int", "cert.pem"), "rb") as f:
        wrong = f.read()  # the CA itself, not its issuer
    with open(path, "wb") as f:
        f.write(wrong)
    assert_refused(populated, lambda: issue(populated, "int", [GOOD]), path, "does not chain up", code="corrupt")


def test_corrupted_ca_key(populated):
    path = populated.ca_path("int", "key.pem")
    with open(path, "wb") as f:
        f.write(b"-----BEGIN " b"PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert_refused(populated, lambda: issue(populated, "int", [GOOD], force=True), path, code="corrupt")
    assert_refused(populated, lambda: make_ca(populated, "int", "root"), path, code="corrupt")


@pytest.mark.parametrize("garbage", [b"", b"not a key",
                                     b"-----BEGIN " b"PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_corrupted_leaf_key_is_never_overwritten(populated, garbage):
    path = populated.leaf_path("good", "key.pem")
    with open(path, "wb") as f:
        f.write(garbage)
    for kwargs in ({}, {"force": True}, {"check": True}):
        assert_refused(populated, lambda: issue(populated, "int", [GOOD], **kwargs), path,
                       "not a readable PEM private key", code="corrupt")
    assert_refused(populated, lambda: issue(populated, "int", [{**GOOD, "rotate_key": True, "key_type": "rsa"}],
                                            force=True), path, code="corrupt")
    assert open(path, "rb").read() == garbage


def test_encrypted_leaf_key_is_not_replaced(populated):
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys
    path = populated.leaf_path("good", "key.pem")
    with open(path, "wb") as f:
        f.write(keys.to_pem(keys.generate(keys.key_spec()), "pw"))
    assert_refused(populated, lambda: issue(populated, "int", [GOOD]), path, "encrypted", code="passphrase_required")


def test_corrupted_index(populated):
    with open(populated.index_path, "wb") as f:
        f.write(b"\x00garbage")
    assert_refused(populated, lambda: issue(populated, "int", [GOOD]), populated.index_path, code="corrupt")
    assert_refused(populated, lambda: make_ca(populated, "int", "root"), populated.index_path, code="corrupt")


def test_name_constraint_violation_among_good_items(store):
    make_ca(store, "root", name_constraints_data={"permitted_dns": ["example.com"]})
    issue(store, "root", [GOOD])
    assert_refused(store, lambda: issue(store, "root", [{"name": "n1", "dns": "n1.example.com"},
                                                        {"name": "n2", "dns": "n2.example.net"}]),
                   "certificate 'n2'", "n2.example.net", code="name_constraints")


@pytest.mark.parametrize("kwargs, needle", [
    ({"key_type": "rsa", "key_size": 1024}, "key_size 1024"),
    ({"key_type": "ed448"}, "unknown key_type 'ed448'"),
    ({"valid_days": -5}, "invalid valid_days -5"),
    ({"subject": {"country": "Deutschland"}}, "'Deutschland'"),
    ({"name_constraints_data": {"permitted_dns": ["bad_name.example.com"]}}, "'bad_name.example.com'"),
])
def test_bad_ca_spec(populated, kwargs, needle):
    assert_refused(populated, lambda: make_ca(populated, "int", "root", **kwargs), needle)


def test_certificates_spec_list_must_be_dicts(populated):
    assert_refused(populated, lambda: ensure_leaves(populated, "int", [specs.leaf_spec("web")]), "'web'")
