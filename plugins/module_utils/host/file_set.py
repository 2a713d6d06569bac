"""Install a set of files as one change: write them all, validate, and put everything back on failure.

Runs on managed hosts (stdlib only, Python 3.6+). Used to push certificates, keys and configuration to
servers and clients in one round trip, so a rejected configuration never replaces a working one.

A file may come from another file on the host (``source``): a key made there (``host_key``'s ``.next``)
replaces the one in use in the same change as its certificate; the source is removed only once the whole
set is written and validated. ``pairs`` checks that each installed certificate carries its installed key.
``prune`` removes, in the same change, files of ours that are no longer wanted (e.g. the trust anchor of a
withdrawn root CA): those in a directory matching a pattern that are not among the files.
A certificate file marked ``keep_newer`` is never replaced by an older certificate of the same CA and key
(``keep_newer``): a run of another control node cannot put back what this one just renewed.
"""

import datetime
import fnmatch
import grp
import os
import pwd
import shlex
import subprocess

from . import generation


class FileSetError(Exception):
    pass


def ids(owner, group):
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as e:
        raise FileSetError(f"unknown user or group {e.args[0]!r}") from None
    return uid, gid


def run_validate(validate):
    """Run the ``validate`` command (no shell); raise with its output when it fails."""
    # stdlib-only host code with no AnsibleModule to call run_command on (ansible-test 2.21's pylint asks for it)
    proc = subprocess.run(shlex.split(validate), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # pylint: disable=ansible-bad-function
                          universal_newlines=True, check=False)
    if proc.returncode != 0:
        raise FileSetError(f"validation '{validate}' failed (exit {proc.returncode}): {proc.stdout.strip()}")


def _state(path):
    """(content, mode, uid, gid) of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            return f.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        return None


def load_sources(files, check=False):
    """Read the content of every file given by ``source`` (a path on this host) into ``content``. In check mode
    a source not made yet (a key check mode did not create) means the file would change."""
    for f in files:
        if f.get("source") and f.get("content") is None:
            try:
                with open(f["source"], "rb") as fh:
                    f["content"] = fh.read()
            except FileNotFoundError:
                if not check:
                    raise FileSetError(f"cannot read {f['source']} (source of {f['path']}): it does not exist") from None
            except OSError as e:
                raise FileSetError(f"cannot read {f['source']} (source of {f['path']}): {e.strerror}") from None
    return files


def _leaf(data):
    """``der.certificate_facts`` of the first certificate in ``data`` (PEM), or None when there is none."""
    from . import der
    try:
        blocks = der.pem_blocks(data, "CERTIFICATE")
        return der.certificate_facts(blocks[0]) if blocks else None
    except der.DerError:
        return None


def keep_newer(files, now=None):
    """Keep the host's file for every file marked ``keep_newer`` whose first certificate is newer than the one
    given: issued later (not before) by the same CA (issuer name and authority key identifier) for the same key,
    and valid now. Such a file is left as it is (its wanted content becomes the current one). Returns what was
    kept: [{path, serial, not_before, not_after, offered_serial, offered_not_before}]."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    kept = []
    for f in files:
        if not f.get("keep_newer") or f.get("content") is None:
            continue
        have = _state(f["path"])
        if have is None or have[0] == f["content"]:
            continue
        held, offered = _leaf(have[0]), _leaf(f["content"])
        if held is None or offered is None or not (
                held["spki"] == offered["spki"] and held["issuer"] == offered["issuer"]
                and held["aki"] == offered["aki"] and held["not_before"] > offered["not_before"]
                and held["not_before"] <= now < held["not_after"]):
            continue
        f["content"] = have[0]
        kept.append({"path": f["path"], "serial": held["serial"], "not_before": _iso(held["not_before"]),
                     "not_after": _iso(held["not_after"]), "offered_serial": offered["serial"],
                     "offered_not_before": _iso(offered["not_before"])})
    return kept


def _iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(files, check=False):
    """The paths whose content, mode or ownership differ from what is wanted."""
    changed = []
    for f in load_sources(files, check):
        if f.get("content") is None:  # check mode, source not there yet
            changed.append(f["path"])
            continue
        uid, gid = ids(f.get("owner"), f.get("group"))
        have = _state(f["path"])
        want = (f["content"], f["mode"], uid if uid != -1 else None, gid if gid != -1 else None)
        if have is None or have[0] != want[0] or have[1] != want[1] or \
                (want[2] is not None and have[2] != want[2]) or (want[3] is not None and have[3] != want[3]):
            changed.append(f["path"])
    return changed


def write_file(path, content, mode, uid, gid, dir_mode):
    """Write ``path`` atomically: a temp file made 0600 from the first byte, owner and mode set, fsync, rename."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, dir_mode)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(content)
            while view:  # os.write may write less than asked (a full disk): never a silently short file
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def pruned(files, prune=()):
    """Paths matching a ``prune`` entry {path: directory, pattern: glob} that are not among ``files``."""
    wanted = {os.path.normpath(f["path"]) for f in files}
    out = []
    for rule in prune:
        try:
            names = sorted(os.listdir(rule["path"]))
        except FileNotFoundError:
            continue
        for name in fnmatch.filter(names, rule["pattern"]):
            path = os.path.normpath(os.path.join(rule["path"], name))
            if path not in wanted and (os.path.isfile(path) or os.path.islink(path)):
                out.append(path)
    return out


def rollback(gen_dir, validate=None):
    """Put back the pending generation in ``gen_dir`` as one validated change (see generation.rollback)."""
    return generation.rollback(gen_dir, write_file, (lambda: run_validate(validate)) if validate else None,
                               restore, _state)


def apply(files, validate=None, dir_mode=0o755, pairs=(), prune=(), generation_dir=None, confirm=False):
    """Write the changed files, remove the ``pruned`` ones, run ``validate`` and check ``pairs``
    [{certificate, key}]; on any failure restore the previous state and raise. Sources of files are removed
    once everything succeeded. With ``generation_dir`` what the change replaced is kept there as a pending
    generation (``rollback`` undoes the change later, ``generation.clear`` confirms it); with ``confirm`` too, the
    result is accepted at once (no gate) and any pending generation is dropped, so a later rollback never goes
    back past it."""
    changed = set(plan(files))
    removed = pruned(files, prune)
    previous = {f["path"]: _state(f["path"]) for f in files if f["path"] in changed}
    previous.update({path: _state(path) for path in removed})
    changed |= set(removed)
    had_generation = True
    if generation_dir and changed and not confirm:
        had_generation = generation.save(generation_dir, previous, write_file)
    try:
        for f in files:
            if f["path"] in changed:
                uid, gid = ids(f.get("owner"), f.get("group"))
                write_file(f["path"], f["content"], f["mode"], uid, gid, dir_mode)
        for path in removed:
            os.unlink(path)
        if changed and validate:
            run_validate(validate)
        if changed:
            for pair in pairs:
                check_pair(pair["certificate"], pair["key"])
    except (OSError, FileSetError):
        restore(previous)
        if not had_generation:
            generation.clear(generation_dir)
        raise
    if generation_dir and confirm:
        generation.clear(generation_dir)
    for f in files:
        if f.get("source"):  # now installed (or already was): the pending copy goes, its CSR goes with it
            if os.path.exists(f["source"] + ".csr"):
                os.replace(f["source"] + ".csr", f["path"] + ".csr")
            if os.path.exists(f["source"]):
                os.unlink(f["source"])
    return sorted(changed)


def check_pair(certificate, key):
    """Fail unless the first certificate in ``certificate`` carries the public key of the key in ``key``."""
    from . import der, openssl  # only needed when pairs are checked
    try:
        with open(certificate, "rb") as f:
            blocks = der.pem_blocks(f.read(), "CERTIFICATE")
        if not blocks:
            raise FileSetError(f"{certificate} holds no certificate")
        if der.certificate_spki(blocks[0]) != openssl.public_key_der(key):
            raise FileSetError(f"the private key {key} does not belong to the certificate {certificate} (their "
                               f"public keys differ)")
    except (der.DerError, openssl.OpenSSLError) as e:
        raise FileSetError(f"cannot check that {key} belongs to {certificate}: {e}") from None


def restore(previous):
    for path, old in previous.items():
        if old is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            content, mode, uid, gid = old
            write_file(path, content, mode, uid, gid, 0o755)
