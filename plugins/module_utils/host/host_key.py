"""A private key made and kept on the host that uses it; the control node gets a CSR and facts, never the key.

Runs on managed hosts (stdlib only, Python 3.8+, the ``openssl`` command). The key lives at ``path``; a
replacement (a rotation, or a change of key type) is made at ``path.next`` and reported instead, until the
certificate for it is installed, when ``install_files`` moves it over ``path`` in the same validated change.
A key that cannot be read is an error naming the path, never a reason to make a new one.
"""

import os
import socket
import stat

from . import der, openssl
from .file_set import FileSetError, ids, write_file

NEXT, CSR = ".next", ".csr"


class HostKeyError(Exception):
    pass


def ensure(path, spec, mode=0o600, owner=None, group=None, dir_mode=0o700, rotate=False, certificate_path=None,
           common_name="", check=False):
    """Make the key if missing (or the next one when rotating); returns the facts the control node decides on."""
    if not os.path.isabs(path):
        raise HostKeyError(f"key path {path!r} must be absolute")
    try:
        uid, gid = ids(owner, group)
    except FileSetError as e:
        raise HostKeyError(str(e)) from None
    changed, created = False, []
    current = _read_key(path)  # (spki, kind) or None
    pending = _read_key(path + NEXT)
    if pending is not None and pending[1] != spec:  # a replacement made for an older request: never deployed
        if not check:
            _remove(path + NEXT, path + NEXT + CSR)
        pending, changed = None, True
    if current is None and pending is not None:  # the key in use is gone: the pending one takes its place
        if not check:
            os.replace(path + NEXT, path)
            if os.path.exists(path + NEXT + CSR):
                os.replace(path + NEXT + CSR, path + CSR)
        current, pending, changed = pending, None, True
    rotating = current is not None and (rotate or current[1] != spec or pending is not None)
    active_path = path + NEXT if rotating else path
    active = pending if rotating else current
    if active is None:
        changed = True
        created.append(active_path)
        if check:
            return _facts(path, spec, None, rotating, changed, created, certificate_path, current, None)
        write_file(active_path, openssl.generate_key(spec), mode, uid, gid, dir_mode)
        active = _read_key(active_path)
    for key_path in (path, path + NEXT):
        if os.path.exists(key_path):
            changed |= _fix_owner_mode(key_path, mode, uid, gid, check)
    csr_pem, csr_changed = _csr(active_path, active, spec, common_name or socket.gethostname(), check)
    return _facts(path, spec, active, rotating, changed or csr_changed, created, certificate_path, current, csr_pem)


def _read_key(path):
    """(SubjectPublicKeyInfo DER, (type, parameter)) of the key at ``path``, or None when there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise HostKeyError(f"{_where()}: {path} is not a regular file (a symlink or something else): refusing to use "
                           f"or replace it; remove it deliberately")
    try:
        spki = openssl.public_key_der(path)
        return spki, der.key_kind(spki)
    except (openssl.OpenSSLError, der.DerError) as e:
        raise HostKeyError(f"{_where()}: {path} is not a readable private key ({e}): it is corrupted, encrypted or "
                           f"truncated. Nothing was changed; restore it from a backup, or remove it deliberately to "
                           f"make a new key") from None


def _fix_owner_mode(path, mode, uid, gid, check):
    st = os.lstat(path)
    wrong = (st.st_mode & 0o7777) != mode or (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
    if wrong and not check:
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    return wrong


def _csr(key_path, key, spec, common_name, check):
    """(CSR PEM, written): the cached CSR next to the key while it still carries the key, else a new one."""
    csr_path = key_path + CSR
    try:
        with open(csr_path, "rb") as f:
            cached = f.read()
        blocks = der.pem_blocks(cached, "CERTIFICATE REQUEST")
        if blocks and der.csr_spki(blocks[0]) == key[0]:
            return cached.decode(), False
    except (OSError, der.DerError):
        pass
    data = openssl.csr(key_path, spec, common_name)  # on stdout: check mode reports it and writes nothing
    if not check:
        write_file(csr_path, data, 0o644, -1, -1, 0o700)
    return data.decode(), True


def _facts(path, spec, active, rotating, changed, created, certificate_path, current, csr_pem):
    held, held_unreadable, matches = _held(certificate_path, current)
    return {"changed": changed, "path": path, "key_type": openssl.describe(spec), "created": created,
            "rotating": rotating, "pending_path": path + NEXT if rotating else None, "csr": csr_pem,
            "certificate": held, "certificate_unreadable": held_unreadable, "certificate_matches_key": matches}


def _held(certificate_path, current):
    """(first certificate PEM, unreadable, matches the current key) of what the host has installed."""
    if not certificate_path:
        return None, False, None
    try:
        with open(certificate_path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        return None, False, None
    except OSError as e:
        raise HostKeyError(f"{_where()}: cannot read the installed certificate {certificate_path}: {e.strerror}") from None
    try:
        blocks = der.pem_blocks(data, "CERTIFICATE")
        spki = der.certificate_spki(blocks[0]) if blocks else None
    except (der.DerError, IndexError):
        return None, True, None
    if not blocks:
        return None, True, None  # only certificate blocks ever leave the host
    return der.to_pem(blocks[0], "CERTIFICATE"), False, current is not None and spki == current[0]


def _remove(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _where():
    return f"host {socket.gethostname()}"
