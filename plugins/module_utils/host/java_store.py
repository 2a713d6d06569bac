"""Java key and trust stores built on the host with its ``keytool`` (stdlib only, Python 3.6+).

A truststore holds trusted certificates under aliases; a keystore holds the identity imported from the
PKCS#12 bundle already on the host (for host keys it was built there, so the key never travels). Both are
PKCS12 (Java's default since 9) or JKS. keytool writes a new store in a private directory and the result
replaces the old one atomically. Passwords reach keytool through files (``-storepass:file``) in that
0700 directory, never on a command line.

keytool's output is not reproducible (fresh salts), so, as for the PKCS#12 bundle, a sidecar
``<store>.meta`` (0600) records what the store was built from (SHA-256 of the sources, a salted HMAC of
the settings, passwords included) and the store's own hash: an unchanged store is recognised without
opening it, and a second run changes nothing.
"""

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile

from .file_set import ids, write_file

TYPES = ("pkcs12", "jks")
MIN_PASSWORD = 6  # keytool refuses shorter store passwords


class JavaStoreError(Exception):
    pass


def check_password(password, what):
    """keytool's rules, named before keytool runs: 6 characters or more, one line."""
    if len(password) < MIN_PASSWORD or "\n" in password or "\r" in password:
        raise JavaStoreError(f"the {what} must be at least {MIN_PASSWORD} characters long and one line "
                             f"(got {len(password)} characters): keytool refuses it otherwise")


def _keytool(args, what):
    tool = shutil.which("keytool")
    if not tool:
        raise JavaStoreError("the keytool command is not installed on this host (Debian: apt-get install "
                             "default-jre-headless)")
    # stdlib only on managed hosts: no AnsibleModule here whose run_command could be used
    proc = subprocess.run([tool] + args, stdin=subprocess.DEVNULL,  # pylint: disable=ansible-bad-function
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise JavaStoreError(f"{what} failed: {lines[-1] if lines else 'exit ' + str(proc.returncode)}")


def _secret_file(tmp, name, password):
    path = os.path.join(tmp, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return path


def _build_truststore(tmp, out, store_type, password, certificates):
    pw = _secret_file(tmp, "store.pw", password)
    for alias, pem in certificates:
        cert = os.path.join(tmp, "cert.pem")
        with open(cert, "w", encoding="ascii") as f:
            f.write(pem)
        _keytool(["-importcert", "-noprompt", "-alias", alias, "-file", cert, "-keystore", out,
                  "-storetype", store_type.upper(), "-storepass:file", pw], f"importing {alias} into the truststore")


def _build_keystore(tmp, out, store_type, password, bundle, bundle_password):
    pw = _secret_file(tmp, "store.pw", password)
    src = _secret_file(tmp, "bundle.pw", bundle_password)
    args = ["-importkeystore", "-noprompt", "-srckeystore", bundle, "-srcstoretype", "PKCS12", "-srcstorepass:file",
            src, "-destkeystore", out, "-deststoretype", store_type.upper(), "-deststorepass:file", pw]
    if store_type == "jks":  # a PKCS12 store has one password; JKS keeps a key password too: the same one
        args += ["-destkeypass:file", pw]
    _keytool(args, f"importing the identity from {bundle} into the keystore")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _settings(salt, values):
    return hmac.new(bytes.fromhex(salt), json.dumps(values).encode(), hashlib.sha256).hexdigest()


def ensure(path, store_type, password, certificates=None, bundle=None, bundle_password="", mode=0o600, owner=None,
           group=None, check=False):
    """A truststore (``certificates``: [(alias, PEM)]) or a keystore (``bundle``: a PKCS#12 file) at ``path``;
    returns {changed, path, reason}."""
    if store_type not in TYPES:
        raise JavaStoreError(f"unknown store type {store_type!r}: use pkcs12 or jks")
    check_password(password, "store password")
    if bundle is None:
        source = _sha256(json.dumps(sorted(certificates)).encode())
        values = ["trust", store_type, password, [entry[0] for entry in certificates]]
    else:
        try:
            with open(bundle, "rb") as f:
                source = _sha256(f.read())
        except OSError as e:
            if check:  # check mode: the bundle this run would install is not there yet
                return {"changed": True, "path": path, "reason": "missing"}
            raise JavaStoreError(f"cannot read the PKCS#12 bundle {bundle}: {e.strerror}") from None
        values = ["key", store_type, password, bundle_password]
    uid, gid = ids(owner, group)
    meta_path = path + ".meta"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    try:
        with open(path, "rb") as f:
            current = _sha256(f.read())
    except OSError:
        current = None
    reason = None
    if current is None:
        reason = "missing"
    elif current != meta.get("sha256"):
        reason = "store changed outside this module"
    elif meta.get("source") != source:
        reason = "certificates changed" if bundle is None else "bundle changed"
    elif meta.get("settings") != _settings(meta.get("salt", ""), values):
        reason = "settings changed"
    if reason is None or check:
        return {"changed": reason is not None, "path": path, "reason": reason or ""}
    tmp = tempfile.mkdtemp(prefix="mtls-java-store-")  # 0700: the password files live here for the build
    try:
        out = os.path.join(tmp, "store")
        if bundle is None:
            _build_truststore(tmp, out, store_type, password, certificates)
        else:
            _build_keystore(tmp, out, store_type, password, bundle, bundle_password)
        with open(out, "rb") as f:
            data = f.read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    salt = os.urandom(16).hex()
    write_file(path, data, mode, uid, gid, 0o755)
    meta = {"source": source, "salt": salt, "sha256": _sha256(data), "settings": _settings(salt, values),
            "type": store_type}
    write_file(meta_path, json.dumps(meta, sort_keys=True).encode() + b"\n", 0o600, uid, gid, 0o755)
    return {"changed": True, "path": path, "reason": reason}
