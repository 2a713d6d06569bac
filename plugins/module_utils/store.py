"""The on-disk store: layout, a lock, staged atomic writes and the issuance index."""

import contextlib
import errno
import fcntl
import json
import os
import time

from .errors import PkiError

DIR_MODE, KEY_MODE, PUBLIC_MODE = 0o700, 0o600, 0o644
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
        for old in self.records:
            if old["kind"] == record["kind"] and old["name"] == record["name"] and old["status"] == "valid":
                old["status"] = "superseded"
        self.records.append(record)
        self._serials.add((record["issuer"], record["serial"]))

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

    Nothing touches the store before ``commit``; a failure while committing removes the temp files,
    so a failed run leaves no half-written file behind.
    """

    def __init__(self, store):
        self.store = store
        self.pending = {}  # path -> (data, mode)

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

    def commit(self):
        temps = []
        try:
            removals = [p for p, (data, _) in self.pending.items() if data is None]
            for path, (data, mode) in self.pending.items():
                if data is None:
                    continue
                _makedirs(os.path.dirname(path))
                tmp = f"{path}.tmp-{os.getpid()}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
                temps.append((tmp, path))
                try:
                    os.fchmod(fd, mode)
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            # Keys first: a crash between renames leaves at worst a certificate that does not match its
            # key, which the next run detects (key_mismatch) and mends.
            for tmp, path in sorted(temps, key=lambda t: not t[1].endswith("key.pem")):
                os.replace(tmp, path)
            for path in removals:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            for d in {os.path.dirname(p) for _, p in temps} | {os.path.dirname(p) for p in removals}:
                _fsync_dir(d)
        except BaseException:
            for tmp, _ in temps:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        finally:
            self.pending = {}


def _makedirs(path):
    if not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent and parent != path:
            _makedirs(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
