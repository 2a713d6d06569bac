"""Helpers shared by the engine's unit tests (no network, no Ansible); fixtures are in conftest.py.

The engine is imported as ``ansible_collections.mtls.rollout`` (tests/conftest.py links the checkout).
Every store lives under ``tmp_path``; time travel uses the engine's ``now=`` parameters, never sleep.
"""

import datetime as dt
import os
import stat

import pytest
from cryptography import x509

from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys, pem, specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_ca import ensure_ca
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError

DAY = dt.timedelta(days=1)


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def make_ca(store, name, issuer=None, *, passphrase=None, issuer_passphrase=None, force=False, check=False,
            now=None, subject=None, **kw):
    """Ensure one CA; ``kw`` are the remaining ``specs.ca_spec`` arguments."""
    spec = specs.ca_spec(name, subject, issuer, **kw)
    return ensure_ca(store, spec, passphrase, issuer_passphrase, force=force, check=check, now=now)


def issue(store, issuer, items, *, passphrase=None, defaults=None, **kw):
    """Ensure a list of leaves (dicts as the certificates module takes them) from ``issuer``."""
    return ensure_leaves(store, issuer, [specs.leaf_spec(i, defaults) for i in items], passphrase, **kw)


def by_name(results):
    return {r["name"]: r for r in results}


def read_cert(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def read_certs(path):
    with open(path, "rb") as f:
        return pem.load_certs(f.read(), path)


def read_key(path, passphrase=None):
    with open(path, "rb") as f:
        return keys.from_pem(f.read(), path, passphrase)


def leaf_cert(store, name):
    return read_cert(store.leaf_path(name, "cert.pem"))


def ca_cert(store, name):
    return read_cert(store.ca_path(name, "cert.pem"))


def public(key_or_cert):
    if isinstance(key_or_cert, x509.Certificate):
        key_or_cert = key_or_cert.public_key()
    return keys.public_der(key_or_cert)


def snapshot(root):
    """Everything under ``root``: relative path -> (kind, mode, bytes), for byte-for-byte comparisons."""
    found = {}
    if not os.path.exists(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            found[os.path.relpath(p, root)] = ("dir", stat.S_IMODE(os.lstat(p).st_mode), None)
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                found[os.path.relpath(p, root)] = ("file", stat.S_IMODE(os.lstat(p).st_mode), fh.read())
    return found


def assert_item_refused(store, call, name, *needles, code=None):
    """``call()`` must return results (a list, or a dict by name) in which item ``name`` alone failed, its ``msg``
    naming every needle, with nothing of that leaf written; returns the results by name."""
    before = snapshot(store.root)
    results = call()
    by_name = results if isinstance(results, dict) else {r["name"]: r for r in results}
    result = by_name[name]
    assert result["failed"] and result["action"] == "refused" and not result["changed"], result
    for needle in needles:
        assert needle in result["msg"], f"{needle!r} not named in: {result['msg']}"
    if code is not None:
        assert result["code"] == code, result["msg"]
    leaf = os.path.join("certs", name) + os.sep
    assert {k: v for k, v in snapshot(store.root).items() if k.startswith(leaf)} == \
        {k: v for k, v in before.items() if k.startswith(leaf)}, "a refused item changed its leaf in the store"
    assert not temp_files(store.root)
    return by_name


def temp_files(root):
    return [os.path.join(d, f) for d, _dirs, fs in os.walk(root) for f in fs if ".tmp-" in f]


def assert_refused(store, call, *needles, code=None):
    """``call()`` must raise PkiError naming every needle, and leave the store byte-for-byte unchanged."""
    before = snapshot(store.root)
    with pytest.raises(PkiError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not named in: {message}"
    if code is not None:
        assert info.value.code == code, message
    assert snapshot(store.root) == before, "a refused run changed the store"
    assert not temp_files(store.root)
    return info.value
