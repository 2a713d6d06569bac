"""A PKCS#12 bundle built on the host from the key that never leaves it (stdlib and the ``openssl`` command).

A bundle costs a key derivation to build, so a sidecar ``<bundle>.meta`` (0600) records what it was built
from: the certificate and chain (SHA-256 of the files), a salted HMAC of the settings (password included)
and the bundle's own hash. An unchanged bundle is recognised without decrypting it.
"""

import hashlib
import hmac
import json
import os

from . import openssl
from .file_set import ids, write_file


def _sha256(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _settings(salt, password, encryption, friendly_name, include_chain):
    text = json.dumps([password, encryption, friendly_name, include_chain])
    return hmac.new(bytes.fromhex(salt), text.encode(), hashlib.sha256).hexdigest()


def ensure(path, key_path, cert_path, chain_path, friendly_name, password, encryption="modern", include_chain=True,
           mode=0o600, owner=None, group=None, check=False):
    """Build (or keep) the bundle at ``path``; returns {changed, path, reason}."""
    uid, gid = ids(owner, group)
    chain_path = chain_path if include_chain else None
    meta_path = path + ".meta"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    missing = [f for f in (key_path, cert_path, chain_path) if f and not os.path.exists(f)]
    if missing:  # in check mode before the first install: the bundle would be built
        if check:
            return {"changed": True, "path": path, "reason": f"{', '.join(missing)} not installed yet"}
        raise OSError(f"cannot build {path}: {', '.join(missing)} missing")
    wanted = {"cert": _sha256(cert_path), "chain": _sha256(chain_path)}
    reason = None
    if not os.path.exists(path):
        reason = "missing"
    elif not meta or _sha256(path) != meta.get("sha256"):
        reason = "bundle changed outside this module"
    elif any(meta.get(k) != v for k, v in wanted.items()):
        reason = "certificate or chain changed"
    elif meta.get("settings") != _settings(meta.get("salt", ""), password, encryption, friendly_name, include_chain):
        reason = "settings changed"
    if reason is None or check:
        return {"changed": reason is not None, "path": path, "reason": reason or ""}
    data = openssl.pkcs12(key_path, cert_path, chain_path, friendly_name, password, encryption)
    salt = os.urandom(16).hex()
    write_file(path, data, mode, uid, gid, 0o700)
    meta = dict(wanted, salt=salt, sha256=hashlib.sha256(data).hexdigest(),
                settings=_settings(salt, password, encryption, friendly_name, include_chain), encryption=encryption)
    write_file(meta_path, json.dumps(meta, sort_keys=True).encode() + b"\n", 0o600, uid, gid, 0o700)
    return {"changed": True, "path": path, "reason": reason}
