"""Hostile and careless input: refused before any work, naming the value and what would be valid, the store
untouched; inputs that would never settle refused; keys never shared; check mode previews a first run."""

import os
import re

import pytest
import yaml

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_ca import ensure_ca
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from ansible_collections.mtls.rollout.plugins.modules import ca as ca_module
from ansible_collections.mtls.rollout.plugins.modules import certificates as certificates_module
from pkitest import assert_refused, issue, leaf_cert, make_ca, public, read_key, snapshot

GOOD = {"name": "good", "dns": "good.example.com"}


@pytest.fixture
def populated(pki):
    issue(pki, "int", [GOOD, {"name": "alice", "profile": "client", "common_name": "alice"}])
    return pki


# --- names and text that would go into a certificate ----------------------------------------------

@pytest.mark.parametrize("item, needles", [
    ({"name": "w", "common_name": "999.1.1.1"}, ["'999.1.1.1'", "all digits", "ip:"]),
    ({"name": "w", "dns": ["999.1.1.1"]}, ["'999.1.1.1'", "all digits", "ip:"]),
    ({"name": "w", "dns": ["10.0.0.300"]}, ["'10.0.0.300'", "ip:"]),
    ({"name": "w", "dns": ["1234"]}, ["'1234'", "ip:"]),
    ({"name": "w", "dns": ["host.123"]}, ["'host.123'", "all digits"]),
    ({"name": "w", "profile": "client", "email": ["x@999.1.1.1"]}, ["'x@999.1.1.1'"]),
    ({"name": "w", "profile": "client", "common_name": "alice\nCN=admin"}, ["common_name", r"'alice\nCN=admin'",
                                                                            "control characters"]),
    ({"name": "w", "profile": "client", "common_name": "alice\x00admin"}, [r"\x00", "control characters"]),
    ({"name": "w", "profile": "client", "common_name": "a\x1b[31m"}, [r"\x1b", "control characters"]),
    ({"name": "w", "profile": "client", "common_name": "a\u202eb"}, ["control characters"]),
    ({"name": "w", "profile": "client", "common_name": "c", "organization": "Acme\r\nO=Evil"},
     ["organization", "control characters"]),
    ({"name": "w", "profile": "client", "subject": {"common_name": "c", "locality": "x\ty"}},
     ["locality", "control characters"]),
    ({"name": "w", "profile": "client", "common_name": "c", "email": ["a\x00b@example.com"]},
     [r"'a\x00b@example.com'"]),
    ({"name": "w", "profile": "client", "common_name": "c" * 65}, ["longer than 64"]),
    ({"name": "w", "profile": "client", "common_name": "c", "organizational_unit": "u" * 65}, ["longer than 64"]),
    ({"name": "w", "dns": "w.example.com", "pkcs12": {"friendly_name": "a\nb"}}, ["friendly_name", "control"]),
    ({"name": "w", "ip": ["fe80::1%eth0"]}, ["'fe80::1%eth0'", "zone id", "'fe80::1'"]),
])
def test_hostile_names_and_text_refused(populated, item, needles):
    assert_refused(populated, lambda: issue(populated, "int", [{"name": "new", "dns": "new.example.com"}, item]),
                   *needles, code="invalid")
    assert not os.path.exists(populated.leaf_path("new"))


@pytest.mark.parametrize("subject, needle", [
    ({"common_name": "Root\nCN=evil"}, "control characters"),
    ({"common_name": "Root", "organization": "O\x00"}, "control characters"),
    ({"common_name": "R" * 65}, "longer than 64"),
])
def test_hostile_ca_subject_refused(populated, subject, needle):
    assert_refused(populated, lambda: make_ca(populated, "sub", "int", subject=subject), needle)


# --- numbers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [99999999, float("nan"), float("inf"), float("-inf"), 1e12, 36501, 0, -1, "x"])
def test_unbounded_valid_days_refused_naming_the_option_and_range(populated, value):
    needles = ["valid_days", "> 0 and <= 36500"]
    assert_refused(populated, lambda: issue(populated, "int", [{**GOOD, "valid_days": value}]), *needles)
    assert_refused(populated, lambda: issue(populated, "int", [GOOD], defaults={"valid_days": value}), *needles)
    assert_refused(populated, lambda: make_ca(populated, "int", "root", valid_days=value), *needles)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e12, -1])
def test_unbounded_renew_before_days_refused(populated, value):
    needles = ["renew_before_days", "<= 36500"]
    assert_refused(populated, lambda: issue(populated, "int", [{**GOOD, "renew_before_days": value}]), *needles)
    assert_refused(populated, lambda: make_ca(populated, "int", "root", renew_before_days=value), *needles)


def test_largest_valid_days_is_issued(populated):
    result = issue(populated, "int", [{"name": "long", "dns": "long.example.com", "valid_days": 36500}])[0]
    assert result["action"] == "issued" and result["warnings"]  # clipped to the issuer, with a warning


# --- inputs that never settle ---------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda s: issue(s, "int", [{**GOOD, "valid_days": 30, "renew_before_days": 30}]),
    lambda s: issue(s, "int", [GOOD], defaults={"renew_before_days": 365}),
    lambda s: make_ca(s, "int", "root", valid_days=100, renew_before_days=100),
    lambda s: make_ca(s, "root", renew_before_days=3650),
])
def test_renew_before_days_not_below_valid_days_refused(populated, call):
    assert_refused(populated, lambda: call(populated), "renew_before_days", "not below its valid_days",
                   "re-issued on every run")


def test_task_level_window_not_below_valid_days_warns(populated):
    """A task-level window wider than a lifetime is a one-off renewal sweep (renew.yml -e ...): allowed, but
    each certificate it makes due at once is named in a warning."""
    results = issue(populated, "int", [{**GOOD, "valid_days": 30}, {"name": "long", "dns": "l.example.com"}],
                    renew_before_days=45)
    assert results[0]["warnings"] and "due as soon as issued" in results[0]["warnings"][0]
    assert "'good'" in results[0]["warnings"][0] and not results[1]["warnings"]
    assert_refused(populated, lambda: issue(populated, "int", [GOOD], renew_before_days=float("nan")),
                   "renew_before_days", "<= 36500")


def _tasks(text):
    """The mtls.rollout.ca/certificates tasks of a YAML example, with templated values filled in."""
    text = re.sub(r'"\{\{ people \}\}"', "[]", text)
    text = re.sub(r'"\{\{ (\w+) \}\}"', r"secret-\1", text)
    return [t for t in yaml.safe_load(text) or [] if isinstance(t, dict)
            and ("mtls.rollout.ca" in t or "mtls.rollout.certificates" in t)]


PEOPLE = [{"name": f"person{i}", "common_name": f"Person {i}", "email": [f"p{i}@example.com"]} for i in range(3)]


def _run_example(store, task):
    """Run one task of the docs through the engine, as the module does; returns the results (list)."""
    if "mtls.rollout.ca" in task:
        a = task["mtls.rollout.ca"]
        passphrases = {c["name"]: c.get("passphrase", a.get("passphrase")) for c in a.get("cas", [])}
        out = []
        for c in a.get("cas") or [a]:  # cas: each CA with its own (else the shared) passphrase, issuers' from the list
            spec = specs.ca_spec(c["name"], c.get("subject"), c.get("issuer"), c.get("key_type", "ec"),
                                 c.get("key_size"), c.get("curve"), c.get("valid_days"), c.get("path_length"),
                                 c.get("name_constraints"), c.get("renew_before_days"), c.get("rotate_key", False))
            out.append(ensure_ca(store, spec, passphrases.get(c["name"], a.get("passphrase")),
                                 passphrases.get(c.get("issuer"), a.get("issuer_passphrase"))))
        return out
    a = task["mtls.rollout.certificates"]
    if not os.path.exists(store.ca_path(a["issuer"], "cert.pem")):  # the docs assume it was made earlier
        ensure_ca(store, specs.ca_spec(a["issuer"]), a.get("issuer_passphrase"))
    return ensure_leaves(store, a["issuer"], [specs.leaf_spec(i, a.get("defaults")) for i in a["certificates"] or PEOPLE],
                         a.get("issuer_passphrase"), a.get("renew_before_days"), a.get("force", False))


def _doc_examples():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    return {"ca EXAMPLES": _tasks(ca_module.EXAMPLES),
            "certificates EXAMPLES": _tasks(certificates_module.EXAMPLES),
            "README.md": [t for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) for t in _tasks(block)]}


@pytest.mark.parametrize("source", ["ca EXAMPLES", "certificates EXAMPLES", "README.md"])
def test_every_example_of_the_docs_settles(tmp_path, source):
    """Each accepted example of the docs, run twice: the second run changes nothing."""
    tasks = _doc_examples()[source]
    assert tasks, f"no module task found in the {source}"
    store = Store(str(tmp_path / "pki"))
    for task in tasks:
        assert _run_example(store, task)
        second = _run_example(store, task)
        assert all(r["action"] == "unchanged" for r in second), (task, second)


# --- issuer names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("issuer", ["../../other/ca/root", "/abs/ca/root", "int/../root", "..", "", "a b"])
def test_issuer_must_be_a_name_in_this_store(populated, tmp_path, issuer):
    other = type(populated)(str(tmp_path / "other"))
    make_ca(other, "root")  # a CA of another store, which such a path would reach
    assert_refused(populated, lambda: issue(populated, issuer, [{"name": "x", "dns": "x.example.com"}]),
                   f"invalid issuer {issuer!r}", "letters, digits")
    assert_refused(populated, lambda: issue(populated, issuer, [GOOD], check=True), f"invalid issuer {issuer!r}")


# --- keys -----------------------------------------------------------------------------------------

def test_a_key_copied_from_another_leaf_is_never_certified_again(populated):
    """A copied key.pem: after key_mismatch (cert present) or with no certificate, a new key is made."""
    alice_key = open(populated.leaf_path("alice", "key.pem"), "rb").read()
    with open(populated.leaf_path("good", "key.pem"), "wb") as f:
        f.write(alice_key)
    result = issue(populated, "int", [GOOD])[0]
    assert result["reasons"] == ["key_mismatch"] and result["key_rotated"]
    new_key = read_key(populated.leaf_path("good", "key.pem"))
    assert public(new_key) == public(leaf_cert(populated, "good")) != public(leaf_cert(populated, "alice"))

    # a new leaf whose directory holds a copy of alice's key, but no certificate
    os.makedirs(populated.leaf_path("copy"), 0o700)
    fd = os.open(populated.leaf_path("copy", "key.pem"), os.O_WRONLY | os.O_CREAT, 0o600)
    with open(fd, "wb") as f:
        f.write(alice_key)
    result = issue(populated, "int", [{"name": "copy", "dns": "copy.example.com"}])[0]
    assert result["reasons"] == ["missing", "key_reused"], result
    assert public(leaf_cert(populated, "copy")) != public(leaf_cert(populated, "alice"))
    certified = [public(leaf_cert(populated, n)) for n in ("good", "alice", "copy")]
    assert len(set(certified)) == 3


def test_own_key_is_kept_when_its_certificate_is_missing(populated):
    key = public(read_key(populated.leaf_path("good", "key.pem")))
    os.unlink(populated.leaf_path("good", "cert.pem"))
    assert issue(populated, "int", [GOOD])[0]["reasons"] == ["missing"]
    assert public(leaf_cert(populated, "good")) == key


# --- check mode -----------------------------------------------------------------------------------

def test_check_mode_previews_a_whole_first_run_and_writes_nothing(tmp_path):
    for exists in (False, True):  # no pki_dir at all, and an empty one
        root = tmp_path / f"pki-{exists}"
        if exists:
            root.mkdir(mode=0o700)
        store = Store(str(root))
        before = snapshot(str(root))
        results = [make_ca(store, "root", check=True), make_ca(store, "int", "root", check=True)]
        results += issue(store, "int", [GOOD, {"name": "alice", "profile": "client", "common_name": "alice"}],
                         check=True)
        assert [(r["action"], r["reasons"]) for r in results] == [("issued", ["missing"])] * 4
        assert all("serial" not in r for r in results)
        assert any("does not exist yet" in w for r in results for w in r.get("warnings", []))
        assert snapshot(str(root)) == before and os.path.exists(root) == exists  # no .lock, nothing


def test_check_mode_still_refuses_a_missing_issuer_of_existing_certificates(populated):
    import shutil
    shutil.rmtree(populated.ca_path("int"))
    assert_refused(populated, lambda: issue(populated, "int", [GOOD], check=True), "issuer 'int' does not exist",
                   code="no_issuer")
