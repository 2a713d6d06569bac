"""The last good generation of a set of installed files, kept on the host so a failed rollout can be undone.

Runs on managed hosts (stdlib only). ``install_files`` saves in ``gen_dir`` what a change replaces (content,
mode and owner of each file, or that it did not exist) as a *pending* generation, before writing. Once the new
files are proven (a canary gate: real handshakes against the host), ``confirm`` drops it; if they are not,
``rollback`` puts every file back. A change made while a generation is still pending (a run interrupted before
its gate) keeps the older state of each file: that is the last one proven good.
"""

import hashlib
import json
import os

MANIFEST = "generation.json"


def pending(gen_dir):
    """The pending generation's manifest {files: {path: {blob, mode, uid, gid} | None}}, or None."""
    try:
        with open(os.path.join(gen_dir, MANIFEST)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(gen_dir, previous, write_file):
    """Record ``previous`` {path: (content, mode, uid, gid) | None} unless the pending generation already has a
    path (its older state wins); returns whether a generation was pending before."""
    manifest = pending(gen_dir)
    existed = manifest is not None
    manifest = manifest or {"files": {}}
    for path, state in previous.items():
        if path in manifest["files"]:
            continue
        if state is None:
            manifest["files"][path] = None
            continue
        content, mode, uid, gid = state
        blob = hashlib.sha256(content).hexdigest()
        write_file(os.path.join(gen_dir, blob), content, 0o600, -1, -1, 0o700)
        manifest["files"][path] = {"blob": blob, "mode": mode, "uid": uid, "gid": gid}
    write_file(os.path.join(gen_dir, MANIFEST), json.dumps(manifest, sort_keys=True).encode(), 0o600, -1, -1, 0o700)
    return existed


def rollback(gen_dir, write_file, validate=None, restore=None, state=None):
    """Put back every file of the pending generation, run ``validate``; the generation is dropped only once that
    passed. If it fails, the files are put back as they were before the rollback (``state`` reads one,
    ``restore`` writes them) and the generation is kept. Returns the paths put back."""
    manifest = pending(gen_dir)
    if manifest is None:
        return []
    paths = sorted(manifest["files"])
    before = {path: state(path) for path in paths} if state else {}
    try:
        for path in paths:
            entry = manifest["files"][path]
            if entry is None:
                if os.path.lexists(path):
                    os.unlink(path)
                continue
            with open(os.path.join(gen_dir, entry["blob"]), "rb") as f:
                write_file(path, f.read(), entry["mode"], entry["uid"], entry["gid"], 0o755)
        if validate:
            validate()
    except BaseException:
        if restore:
            restore(before)
        raise
    clear(gen_dir)
    return paths


def clear(gen_dir):
    """Drop the pending generation (the files it kept, old keys among them, are removed)."""
    manifest = pending(gen_dir)
    if manifest is None:
        return False
    for entry in manifest["files"].values():
        if entry is not None:
            try:
                os.unlink(os.path.join(gen_dir, entry["blob"]))
            except FileNotFoundError:
                pass
    os.unlink(os.path.join(gen_dir, MANIFEST))
    return True
