"""The store under faults, storage-engine style: a full disk at every fill level, short writes, kill -9,
a deleted lock file, a writer that ignores the lock, an index of the wrong shape, symlinks and modes.

Nothing lost (a failed run leaves every file as it was), nothing leaked (no key in a temp file left behind,
none readable by others, none written through a symlink out of the store).
"""

import contextlib
import json
import multiprocessing
import os
import signal
import stat
import subprocess

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys, pem
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from pkitest import assert_refused, issue, leaf_cert, make_ca, read_key, snapshot, temp_files

FORK = multiprocessing.get_context("fork")
PAGE = 4096


def _leaves(prefix, count, **extra):
    return [{"name": f"{prefix}{i}", "dns": f"{prefix}{i}.example.com", **extra} for i in range(count)]


def _assert_consistent(store, names):
    """index.json parses, and every leaf's certificate, key and index record agree."""
    index = store.load_index()
    for name in names:
        cert = leaf_cert(store, name)
        assert keys.public_der(read_key(store.leaf_path(name, "key.pem"))) == keys.public_der(cert.public_key())
        assert index.current("leaf", name)["fingerprint_sha256"] == pem.fingerprint(cert)


# --- a full disk --------------------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size):
    assert os.geteuid() == 0, "the full-disk tests mount a tmpfs: run them as root (CI does)"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def filled(directory, free_pages):
    """Fill the filesystem of ``directory`` (fallocate) until ``free_pages`` pages are left."""
    st = os.statvfs(directory)
    size = st.f_bavail * st.f_frsize - free_pages * PAGE
    filler = os.path.join(directory, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if size > 0:
            os.posix_fallocate(fd, 0, size)
        yield
    finally:
        os.close(fd)
        os.unlink(filler)


@pytest.mark.parametrize("operation", ["new leaf", "renewal with a new key and bundle"])
def test_full_disk_at_every_fill_level_loses_nothing(tmp_path, operation):
    """From 0 free pages to enough for the whole run: either the run succeeds completely, or it fails
    naming ENOSPC and leaves every file (the index above all) as it was."""
    with tmpfs(tmp_path / "fs", "4m") as fs:
        store = Store(str(fs / "pki"))
        make_ca(store, "root")
        base = _leaves("host", 30) + [{"name": "web", "dns": "web.example.com", "pkcs12": {"password": "pw"}}]
        issue(store, "root", base)  # an index of several pages, so a short write can cut it
        assert os.path.getsize(store.index_path) > 4 * PAGE
        names = [i["name"] for i in base]
        outcomes = []
        for free in range(0, 24):
            before = snapshot(store.root)
            if operation == "new leaf":
                items, names_after = _leaves(f"new{free}-", 1), names + [f"new{free}-0"]
                kw = {}
            else:
                items, names_after, kw = [{**base[-1], "rotate_key": True}], names, {"force": True}
            with filled(str(fs), free):
                try:
                    issue(store, "root", items, **kw)
                except PkiError as e:
                    outcomes.append("failed")
                    assert "ENOSPC" in str(e) and "No space left on device" in str(e), e
                    assert snapshot(store.root) == before, f"{free} pages free: a failed run changed the store"
                else:
                    outcomes.append("ok")
                    names = names_after
                assert not temp_files(store.root), f"{free} pages free: temp files left"
            _assert_consistent(store, names)
        # the loop covered both sides: runs that could not fit and runs that did
        assert outcomes[0] == "failed" and outcomes[-1] == "ok", outcomes


def test_short_writes_are_completed(pki, monkeypatch):
    """os.write may write less than asked (a nearly full disk, a signal): the rest is written, not dropped."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:100])))
    issue(pki, "int", _leaves("s", 20, pkcs12={"password": "pw"}))
    monkeypatch.undo()
    _assert_consistent(pki, [f"s{i}" for i in range(20)])
    json.loads(open(pki.index_path, "rb").read())


# --- kill -9 and temp files ------------------------------------------------------------------------

def _killed_while_committing(root):
    """Issue many leaves and die by SIGKILL at the first rename: every temp file is written, none renamed."""
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    issue(Store(root), "int", _leaves("k", 40))


def test_kill_9_leaves_no_key_behind_for_long(pki):
    proc = FORK.Process(target=_killed_while_committing, args=(pki.root,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    left = temp_files(pki.root)
    assert any("key.pem" in t for t in left), left  # the kill came when it hurts: keys in temp files
    for t in left:  # ... but no key was ever readable by anyone else
        if "key.pem" in t:
            assert stat.S_IMODE(os.stat(t).st_mode) == 0o600, t
    results = issue(pki, "int", _leaves("k", 40))  # the next run, under the lock, removes them
    assert not temp_files(pki.root)
    assert {r["action"] for r in results} == {"issued"}
    _assert_consistent(pki, [f"k{i}" for i in range(40)])


def test_check_mode_leaves_stale_temp_files_alone(pki):
    stale = pki.leaf_path("x", "key.pem.tmp-99999")
    os.makedirs(os.path.dirname(stale))
    for d in (os.path.join(pki.root, "certs"), os.path.dirname(stale)):
        os.chmod(d, 0o700)
    with open(stale, "wb") as f:
        f.write(b"k")
    os.chmod(stale, 0o600)
    before = snapshot(pki.root)
    issue(pki, "int", _leaves("c", 2), check=True)  # check mode writes nothing at all
    assert snapshot(pki.root) == before
    issue(pki, "int", _leaves("c", 2))
    assert not temp_files(pki.root)


def test_temp_files_are_private_from_the_first_byte(pki, monkeypatch):
    modes = []
    real_write = os.write

    def write(fd, data):
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", write)
    old_umask = os.umask(0)  # the umask must not matter
    try:
        issue(pki, "int", _leaves("p", 2, pkcs12={"password": "pw"}))
    finally:
        os.umask(old_umask)
    assert modes and set(modes) == {0o600}, modes
    assert stat.S_IMODE(os.stat(pki.leaf_path("p0")).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(pki.leaf_path("p0", "cert.pem")).st_mode) == 0o644


# --- the lock -------------------------------------------------------------------------------------

def _hold_lock(root, held, release):
    with Store(root).lock():
        held.set()
        release.wait(60)


class QuickStore(Store):
    def lock(self, timeout=0.3, create=True):
        return super().lock(timeout=timeout, create=create)


def test_deleting_the_lock_file_does_not_break_mutual_exclusion(pki):
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold_lock, args=(pki.root, held, release))
    holder.start()
    try:
        assert held.wait(30)
        for leftover in (".lock",):  # whatever file a lock might live in, an operator deletes it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(pki.root, leftover))
        quick = QuickStore(pki.root)
        assert_refused(quick, lambda: issue(quick, "int", _leaves("l", 1)), "locked by another run", code="locked")
    finally:
        release.set()
        holder.join(30)


def test_an_index_changed_behind_the_lock_is_never_overwritten(pki, monkeypatch):
    """A writer that bypassed the lock records a certificate mid-run: this run fails, that record stays."""
    issue(pki, "int", _leaves("a", 1))
    other = pki.load_index()
    other.add({**other.records[-1], "name": "theirs", "serial": "abc123"})
    real_generate = keys.generate

    def generate(spec):  # mid-run, after this run loaded the index
        with open(pki.index_path, "wb") as f:
            f.write(other.dumps())
        return real_generate(spec)
    monkeypatch.setattr(keys, "generate", generate)
    with pytest.raises(PkiError, match="index.json was changed by another run") as info:
        issue(pki, "int", _leaves("b", 1))
    assert info.value.code == "index_changed"
    assert pki.load_index().current("leaf", "theirs")["serial"] == "abc123"
    assert not os.path.exists(pki.leaf_path("b0"))


# --- the index ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, needle", [
    ([1], "got a list"),
    ([], "got a list"),
    ("issued", "got a str"),
    ({"issued": 5}, "'issued' must be a list"),
    ({"issued": [1]}, "issued[0] must be an object"),
    ({"issued": [{"kind": "leaf", "name": "x"}]}, "issued[0] lacks the text field(s) issuer, serial, status"),
    ({"issued": [], "bundles": []}, "'bundles' must be an object"),
    ({"version": 7, "issued": []}, "unknown version 7"),
    ({"issued": [], "travelled": ["ab12"]}, "'travelled' must be an object"),
    ({"issued": [], "travelled": {"ab12": 5}}, "'travelled' must be an object"),
])
def test_index_of_the_wrong_shape_is_refused_and_kept(pki, content, needle):
    data = json.dumps(content).encode()
    with open(pki.index_path, "wb") as f:
        f.write(data)
    os.chmod(pki.index_path, 0o600)
    assert_refused(pki, lambda: issue(pki, "int", _leaves("i", 1)), pki.index_path, "not a valid index", needle,
                   code="corrupt")
    assert_refused(pki, lambda: make_ca(pki, "int", "root", force=True), "not a valid index", code="corrupt")
    assert open(pki.index_path, "rb").read() == data


# --- symlinks and modes ---------------------------------------------------------------------------

@pytest.fixture
def web(pki):
    issue(pki, "int", [{"name": "web", "dns": "web.example.com"}, {"name": "api", "dns": "api.example.com"}])
    return pki


def test_key_readable_by_others_is_refused_naming_it(web):
    key = web.leaf_path("web", "key.pem")
    os.chmod(key, 0o644)
    assert_refused(web, lambda: issue(web, "int", _leaves("web", 0) + [{"name": "web", "dns": "web.example.com"}]),
                   key, "0644", "chmod 600", code="mode")


def test_store_directory_open_to_others_is_refused_naming_it(web):
    os.chmod(web.leaf_path("web"), 0o755)
    assert_refused(web, lambda: issue(web, "int", [{"name": "web", "dns": "web.example.com"}]),
                   web.leaf_path("web").rstrip("/"), "0755", "chmod 700", code="mode")


def test_symlinked_key_is_refused(web):
    key = web.leaf_path("web", "key.pem")
    os.unlink(key)
    os.symlink(web.leaf_path("api", "key.pem"), key)
    assert_refused(web, lambda: issue(web, "int", [{"name": "web", "dns": "web.example.com"}]),
                   key, "symlink", code="symlink")


def test_symlinked_leaf_directory_is_never_written_through(web, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    link = web.leaf_path("new").rstrip("/")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(str(outside), link)
    assert_refused(web, lambda: issue(web, "int", [{"name": "new", "dns": "new.example.com"}]),
                   link, "symlink", code="symlink")
    assert list(outside.iterdir()) == []


def test_symlinked_certs_directory_is_refused(web, tmp_path):
    certs = os.path.join(web.root, "certs")
    moved = str(tmp_path / "elsewhere")
    os.rename(certs, moved)
    os.symlink(moved, certs)
    assert_refused(web, lambda: issue(web, "int", [{"name": "web", "dns": "web.example.com"}]), certs, "symlink",
                   code="symlink")


def test_stale_temp_files_are_removed_below_the_store_never_through_a_symlink(pki, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "key.pem.tmp-99999").write_bytes(b"not the store's")
    os.symlink(outside, os.path.join(pki.root, "ca", "linked"))
    stale = [pki.ca_path("int", "cert.pem.tmp-99999"), os.path.join(pki.root, "verified.json.tmp-1")]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"k")
    assert sorted(pki.remove_stale_temp_files()) == sorted(stale)
    assert (outside / "key.pem.tmp-99999").exists()
