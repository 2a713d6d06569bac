"""Cross-certificates for a root rotation (plugins/module_utils/pki/cross.py), checked with openssl verify: a chain
through the cross validates for clients that trust only the old root, and for those that trust only the new one."""

import os
import subprocess

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import cross
from pkitest import DAY, issue, make_ca, snapshot, utcnow

NOW = utcnow()


@pytest.fixture
def rotation(store):
    """root (old) -> int-old -> old-web; root2 (new) -> int-new -> new-web."""
    make_ca(store, "root", now=NOW)
    make_ca(store, "int-old", "root", now=NOW)
    make_ca(store, "root2", now=NOW)
    make_ca(store, "int-new", "root2", now=NOW)
    issue(store, "int-old", [{"name": "old-web", "common_name": "web.example.com"}], now=NOW)
    issue(store, "int-new", [{"name": "new-web", "common_name": "web.example.com"}], now=NOW)
    return store


def verify(store, leaf, anchor, *untrusted, purpose="sslserver"):
    """openssl verify of a leaf of the store against one root, with the given CA files as untrusted."""
    bundle = os.path.join(store.root, "untrusted.pem")
    with open(bundle, "wb") as out:
        for path in untrusted:
            out.write(open(path, "rb").read())
    argv = ["openssl", "verify", "-purpose", purpose, "-CAfile", store.ca_path(anchor, "cert.pem")]
    if untrusted:
        argv += ["-untrusted", bundle]
    proc = subprocess.run(argv + [store.leaf_path(leaf, "cert.pem")], capture_output=True, text=True, check=False)
    return proc.returncode == 0, proc.stdout + proc.stderr


def test_new_leaves_verify_for_old_only_and_new_only_clients(rotation):
    result = cross.ensure_cross(rotation, "root2", "root", now=NOW)
    assert result["changed"] and result["reasons"] == ["missing"]
    x = cross.path(rotation, "root2", "root")
    assert not verify(rotation, "new-web", "root", rotation.ca_path("int-new", "cert.pem"))[0]  # without the cross
    ok, out = verify(rotation, "new-web", "root", rotation.ca_path("int-new", "cert.pem"), x)
    assert ok, out
    ok, out = verify(rotation, "new-web", "root2", rotation.ca_path("int-new", "cert.pem"), x)
    assert ok, out


def test_reverse_cross_lets_new_only_clients_verify_old_leaves(rotation):
    cross.ensure_cross(rotation, "root", "root2", now=NOW)
    old_int = rotation.ca_path("int-old", "cert.pem")
    assert not verify(rotation, "old-web", "root2", old_int)[0]
    ok, out = verify(rotation, "old-web", "root2", old_int, cross.path(rotation, "root", "root2"))
    assert ok, out


def test_cross_carries_the_subject_key_and_name_and_never_outlives_either(rotation):
    from pkitest import ca_cert, read_cert
    cross.ensure_cross(rotation, "root2", "root", now=NOW)
    x = read_cert(cross.path(rotation, "root2", "root"))
    new, old = ca_cert(rotation, "root2"), ca_cert(rotation, "root")
    assert x.subject == new.subject and x.issuer == old.subject and x.public_key() == new.public_key()
    assert x.not_valid_after_utc <= min(new.not_valid_after_utc, old.not_valid_after_utc)
    record = rotation.load_index().current("cross", "root2@root")
    assert record["issuer"] == "root" and record["status"] == "valid"


def test_second_run_changes_nothing_and_check_mode_writes_nothing(rotation):
    before = snapshot(rotation.root)
    assert cross.ensure_cross(rotation, "root2", "root", check=True, now=NOW)["changed"]
    assert snapshot(rotation.root) == before
    cross.ensure_cross(rotation, "root2", "root", now=NOW)
    after = snapshot(rotation.root)
    assert not cross.ensure_cross(rotation, "root2", "root", now=NOW)["changed"]
    assert snapshot(rotation.root) == after


@pytest.mark.parametrize("change, reason", [
    ("signer re-keyed", "issuer_changed"),
    ("subject re-keyed", "subject_changed"),
    ("near the end", "due"),
])
def test_reissued_only_for_a_reason(rotation, change, reason):
    cross.ensure_cross(rotation, "root2", "root", now=NOW)
    now = NOW
    if change == "signer re-keyed":
        make_ca(rotation, "root", rotate_key=True, force=True, now=NOW)
    elif change == "subject re-keyed":
        make_ca(rotation, "root2", rotate_key=True, force=True, now=NOW)
    else:
        now = NOW + 3400 * DAY
    result = cross.ensure_cross(rotation, "root2", "root", now=now)
    assert any(r.startswith(reason) for r in result["reasons"]), result


def test_a_ca_cannot_cross_itself(rotation):
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
    with pytest.raises(PkiError, match="itself"):
        cross.ensure_cross(rotation, "root", "root", now=NOW)
