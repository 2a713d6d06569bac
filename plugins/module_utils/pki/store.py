"""The on-disk store: layout, a lock, staged atomic writes and the issuance index."""

import contextlib
import errno
import fcntl
import functools
import json
import os
import sys
import time

from .errors import PkiError

DIR_MODE, KEY_MODE, PUBLIC_MODE = 0o700, 0o600, 0o644
# From this many staged files on, a commit syncs each filesystem once (syncfs) instead of every file.
BATCH_SYNC_MIN = 64
LEAF_FILES = ("cert.pem", "key.pem", "chain.pem", "fullchain.pem", "ca.pem", "bundle.p12")
CA_FILES = ("cert.pem", "key.pem", "chain.pem", "fullchain.pem", "crl.pem")


class Store:
    """``pki_dir`` with ``ca/<name>/`` per CA, ``certs/<name>/`` per leaf and ``index.json``."""

    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(root))

    def ca_path(self, name, filename=""):
        return os.path.join(self.root, "ca", name, filename)

    def leaf_path(self, name, filename=""):
        return os.path.join(self.root, "certs", name, filename)

    @property
    def index_path(self):
        return os.path.join(self.root, "index.json")

    @contextlib.contextmanager
    def lock(self, timeout=300, create=True):
        """Exclusive lock over the whole store, so two runs never interleave or reuse a serial."""
        if not create and not os.path.isdir(self.root):
            yield
            return
        _makedirs(self.root)
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, KEY_MODE)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise PkiError(f"the store {self.root} is locked by another run (waited {timeout}s)",
                                       "locked") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def read(self, path):
        """File content, or None when the file does not exist."""
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def load_index(self):
        data = self.read(self.index_path)
        if data is None:
            return Index()
        try:
            return Index(json.loads(data))
        except ValueError:
            raise PkiError(f"{self.index_path} is not valid JSON (corrupted); restore it from a backup",
                           "corrupt") from None

    def transaction(self):
        return Transaction(self)


class Index:
    """The issuance record: every certificate issued (serial, names, status) and bundle metadata."""

    def __init__(self, data=None):
        data = data or {}
        self.records = data.get("issued", [])
        self.bundles = data.get("bundles", {})
        self._serials = {(r["issuer"], r["serial"]) for r in self.records}

    def has_serial(self, issuer, serial_hex):
        return (issuer, serial_hex) in self._serials

    def add(self, record):
        """Record an issuance; the previous current certificate of the same name is superseded."""
        by_name = self._by_name()
        key = (record["kind"], record["name"])
        for old in by_name.get(key, ()):
            if old["status"] == "valid":
                old["status"] = "superseded"
        self.records.append(record)
        by_name[key] = [record]  # the others are superseded (or revoked): never "valid" again
        self._by_name_len = len(self.records)
        self._serials.add((record["issuer"], record["serial"]))

    def _by_name(self):
        """{(kind, name): records that may still be "valid"}, so ``add`` stays O(1) when a run issues
        thousands of certificates; rebuilt whenever ``records`` was replaced or grown by someone else."""
        if getattr(self, "_by_name_of", None) is not self.records or self._by_name_len != len(self.records):
            self._by_name_map = {}
            for r in self.records:
                if r.get("status") == "valid":
                    self._by_name_map.setdefault((r["kind"], r["name"]), []).append(r)
            self._by_name_of, self._by_name_len = self.records, len(self.records)
        return self._by_name_map

    def current(self, kind, name):
        for r in reversed(self.records):
            if r["kind"] == kind and r["name"] == name:
                return r
        return None

    def dumps(self):
        return json.dumps({"version": 1, "issued": self.records, "bundles": self.bundles},
                          indent=1, sort_keys=True).encode() + b"\n"


class Transaction:
    """Writes staged in memory, then committed all at once: temp files, fsync, rename.

    Nothing touches the store before ``commit``; a failure while committing removes the temp files and
    puts back every file already renamed or removed (and the directories it made), so a failed run
    leaves neither a temp file nor a half-set of new files behind.
    """

    def __init__(self, store):
        self.store = store
        self.pending = {}  # path -> (data, mode)
        self._prepared = {}  # path -> (temp path, data, mode, synced): temp files written by prepare()
        self._made = []  # directories prepare() created

    def write(self, path, data, mode=PUBLIC_MODE):
        self.pending[path] = (data, mode)

    def remove(self, path):
        self.pending[path] = (None, None)

    def changed(self, path, data):
        """Stage a write only if the content differs; returns whether it did."""
        if self.store.read(path) == data:
            return False
        self.write(path, data, KEY_MODE if path.endswith(("key.pem", ".p12")) else PUBLIC_MODE)
        return True

    def prepare(self):
        """Write the temp files of everything staged so far, renaming nothing: a caller can overlap this
        with other work (e.g. bundles being serialized by worker processes). ``commit`` then only writes what
        was staged (or changed) since, and renames; ``abort`` removes the temp files and directories made."""
        try:
            sync = _syncfs() is None  # with syncfs the commit flushes them all at once
            for path, (data, mode) in self.pending.items():
                prepared = self._prepared.get(path)
                if data is None or (prepared is not None and prepared[1] is data and prepared[2] == mode):
                    continue
                self._made += _makedirs(os.path.dirname(path))
                self._prepared[path] = (_write_temp(path, data, mode, sync=sync), data, mode, sync)
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Forget what is staged; remove the temp files and directories ``prepare`` made."""
        for tmp, *_rest in self._prepared.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in reversed(self._made):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        self.pending, self._prepared, self._made = {}, {}, []

    def commit(self):
        temps, done = [], []  # done: (path, (data, mode) before, or None when it did not exist)
        made, prepared = self._made, self._prepared
        self._made, self._prepared = [], {}
        try:
            removals = [p for p, (data, _mode) in self.pending.items() if data is None]
            # A large transaction (e.g. a thousand leaves) syncs once per filesystem instead of once per
            # file: the same guarantee (every temp file on disk before the first rename, every rename on
            # disk before commit returns) for one flush instead of thousands.
            batch = _syncfs() is not None and (len(self.pending) >= BATCH_SYNC_MIN
                                               or any(not synced for *_rest, synced in prepared.values()))
            dirs = set()
            for path, (data, mode) in self.pending.items():
                if data is None:
                    continue
                parent = os.path.dirname(path)
                ready = prepared.pop(path, None)
                if ready is not None and ready[1] is data and ready[2] == mode:
                    temps.append((ready[0], path))
                    dirs.add(parent)
                    continue
                if ready is not None:  # staged again since prepare(): its temp file is rewritten
                    prepared[path] = ready
                if parent not in dirs:
                    made += _makedirs(parent)
                    dirs.add(parent)
                temps.append((_write_temp(path, data, mode, sync=not batch), path))
            written = {t for t, _path in temps}
            for tmp, *_rest in prepared.values():  # prepared, then removed or staged again
                if tmp not in written:
                    os.unlink(tmp)
            prepared = {}
            if batch:
                _sync_filesystems(dirs)
            # Keys first: a crash (no rollback) between renames leaves at worst a certificate that does not
            # match its key, which the next run detects (key_mismatch) and mends.
            for tmp, path in sorted(temps, key=lambda t: not t[1].endswith("key.pem")):
                old = self._snapshot(path)
                os.replace(tmp, path)
                done.append((path, old))
            for path in removals:
                old = self._snapshot(path)
                if old is not None:
                    os.unlink(path)
                    done.append((path, old))
            dirs |= {os.path.dirname(p) for p in removals}
            if batch:
                _sync_filesystems(dirs)
            else:
                for d in dirs:
                    _fsync_dir(d)
        except BaseException:
            for tmp in [t for t, _path in temps] + [t for t, *_rest in prepared.values()]:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for path, old in reversed(done):
                with contextlib.suppress(OSError):
                    if old is None:
                        os.unlink(path)
                    else:
                        os.replace(_write_temp(path, *old), path)
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            raise
        finally:
            self.pending = {}

    def _snapshot(self, path):
        data = self.store.read(path)
        return None if data is None else (data, os.stat(path).st_mode & 0o777)


def _write_temp(path, data, mode, sync=True):
    """Write ``data`` to a temp file next to ``path`` (mode set, fsynced unless the caller syncs the
    whole batch); returns the temp path."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _makedirs(path):
    """Create ``path`` and missing parents (mode 0700); returns the directories created, outermost first."""
    made = []
    if not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent and parent != path:
            made += _makedirs(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
            made.append(path)
    return made


@functools.lru_cache(maxsize=None)
def _syncfs():
    """Linux syncfs(2) as a function of a directory path, or None where it is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, ImportError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int

    def syncfs(path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if fn(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
        finally:
            os.close(fd)
    return syncfs


def _sync_filesystems(dirs):
    """syncfs once for each filesystem holding one of ``dirs`` (a directory may be a mount point)."""
    done = set()
    for d in sorted(dirs):
        dev = os.stat(d).st_dev
        if dev not in done:
            _syncfs()(d)
            done.add(dev)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
