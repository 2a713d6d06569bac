"""Install a set of files as one change: write them all, validate, and put everything back on failure.

Runs on managed hosts (stdlib only, Python 3.8+). Used to push certificates, keys and configuration to
servers and clients in one round trip, so a rejected configuration never replaces a working one.
"""

import grp
import os
import pwd
import shlex
import subprocess


class FileSetError(Exception):
    pass


def _ids(owner, group):
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as e:
        raise FileSetError(f"unknown user or group {e.args[0]!r}") from None
    return uid, gid


def _state(path):
    """(content, mode, uid, gid) of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            return f.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        return None


def plan(files):
    """The paths whose content, mode or ownership differ from what is wanted."""
    changed = []
    for f in files:
        uid, gid = _ids(f.get("owner"), f.get("group"))
        have = _state(f["path"])
        want = (f["content"], f["mode"], uid if uid != -1 else None, gid if gid != -1 else None)
        if have is None or have[0] != want[0] or have[1] != want[1] or \
                (want[2] is not None and have[2] != want[2]) or (want[3] is not None and have[3] != want[3]):
            changed.append(f["path"])
    return changed


def _write(path, content, mode, uid, gid, dir_mode):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, dir_mode)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def apply(files, validate=None, dir_mode=0o755):
    """Write the changed files, run ``validate``; on any failure restore the previous state and raise."""
    changed = set(plan(files))
    previous = {f["path"]: _state(f["path"]) for f in files if f["path"] in changed}
    try:
        for f in files:
            if f["path"] in changed:
                uid, gid = _ids(f.get("owner"), f.get("group"))
                _write(f["path"], f["content"], f["mode"], uid, gid, dir_mode)
        if changed and validate:
            proc = subprocess.run(shlex.split(validate), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, check=False)
            if proc.returncode != 0:
                raise FileSetError(f"validation '{validate}' failed (exit {proc.returncode}): {proc.stdout.strip()}")
    except (OSError, FileSetError):
        restore(previous)
        raise
    return sorted(changed)


def restore(previous):
    for path, old in previous.items():
        if old is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            content, mode, uid, gid = old
            _write(path, content, mode, uid, gid, 0o755)
