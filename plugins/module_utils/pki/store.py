"""The on-disk store: layout, a lock, staged atomic writes and the issuance index."""

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import stat
import sys
import time

from .errors import PkiError

DIR_MODE, KEY_MODE, PUBLIC_MODE = 0o700, 0o600, 0o644
# From this many staged files on, a commit syncs each filesystem once (syncfs) instead of every file.
BATCH_SYNC_MIN = 64
LEAF_FILES = ("cert.pem", "key.pem", "chain.pem", "fullchain.pem", "ca.pem", "bundle.p12")
CA_FILES = ("cert.pem", "key.pem", "chain.pem", "fullchain.pem", "crl.pem")
PRIVATE_FILES = ("key.pem", ".p12", "index.json")  # suffixes of files that must be 0600
ABSENT, CHANGED = "-", "changed"  # Store.digests: no file; read twice, two contents
# temp files of _write_temp and the rollback links of Transaction.commit: "<file>.tmp-<pid>[.old]"
TEMP_FILE = re.compile(r"\.tmp-[0-9]+(\.old)?$")


class Store:
    """``pki_dir`` with ``ca/<name>/`` per CA, ``certs/<name>/`` per leaf and ``index.json``."""

    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(root))
        self._checked = set()  # directories check_path found safe
        self._leaf_dirs = {}
        self.digests = None  # {path: SHA-256 hex of what ``read`` returned (ABSENT: no file)} when a dict

    def ca_path(self, name, filename=""):
        return os.path.join(self.root, "ca", name, filename)

    def leaf_path(self, name, filename=""):
        base = self._leaf_dirs.get(name)  # asked for ~20 times per leaf and run
        if base is None:
            base = self._leaf_dirs[name] = os.path.join(self.root, "certs", name, "")
        return base + filename

    @property
    def index_path(self):
        return os.path.join(self.root, "index.json")

    @contextlib.contextmanager
    def lock(self, timeout=300, create=True):
        """Exclusive lock over the whole store, so two runs never interleave or reuse a serial.

        The lock is an flock on the store directory itself, which no one can unlink from under a holder
        (a lock file could be). A writing run (``create``) then removes the temp files a killed run left;
        a read-only run (check mode) creates nothing, not even the store directory.
        """
        if not os.path.isdir(self.root):
            if not create:
                yield
                return
            _makedirs(self.root)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
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
            self._checked = set()  # what check_path found may have changed while the lock was free
            if create:
                self.remove_stale_temp_files()
            yield
        finally:
            os.close(fd)

    def remove_stale_temp_files(self):
        """Remove the temp files of writers that died (kill -9, power loss): only the lock holder writes
        temp files, so under the lock every one found is stale. Returns the paths removed."""
        removed, directories = [], [self.root]
        while directories:  # every directory below the root, never through a symlink
            with os.scandir(directories.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        directories.append(entry.path)
                    elif TEMP_FILE.search(entry.name):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            removed.append(entry.path)
        return removed

    def check_path(self, path):
        """Refuse a path whose directories below the store root are symlinks, or whose own directory (a
        leaf's or a CA's) is open to group/others: the store never follows a symlink out of itself."""
        checked, d, parent = self._checked, self.root, os.path.dirname(path)
        if parent in checked:
            return
        prefix = self.root + os.sep
        rel = parent[len(prefix):] if parent.startswith(prefix) and ".." not in parent else os.path.relpath(
            parent, self.root)
        if rel == "." or rel.startswith(".."):
            return
        for part in rel.split(os.sep):
            d = os.path.join(d, part)
            if d in checked:
                continue
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                raise PkiError(f"{d} in the store is a symlink (to {os.readlink(d)}): the store never follows a "
                               f"symlink out of itself; replace it with a directory", "symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise PkiError(f"{d} in the store is not a directory", "corrupt")
            if st.st_mode & 0o077 and d == parent:  # a leaf's or CA's own directory
                raise PkiError(f"{d} in the store has mode {stat.S_IMODE(st.st_mode):04o}, open to other users: "
                               f"make it private (chmod 700 {d}), and if a key in it may have been read, "
                               f"rotate that key", "mode")
            checked.add(d)

    def read(self, path):
        """File content, or None when the file does not exist. Refuses symlinks, directories of the store
        open to others (``check_path``) and private files (keys, bundles, the index) that are not 0600."""
        self.check_path(path)
        data = self._read_checked(path)
        if self.digests is not None:
            self._remember(path, hashlib.sha256(data).hexdigest() if data is not None else ABSENT)
        return data

    def read_leaf(self, name, filenames):
        """{filename: content or None} of a leaf's files, each read as ``read`` does (its directory checked once)."""
        base = self.leaf_path(name)
        self.check_path(base)
        return {f: self._read_checked(base + f) for f in filenames}

    def _read_checked(self, path):
        """``read`` once ``check_path`` passed for the file's directory."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PkiError(f"{path} in the store is a symlink (to {os.readlink(path)}): the store never "
                               f"follows a symlink; replace it with the file itself", "symlink") from None
            raise
        try:
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077 and path.endswith(PRIVATE_FILES) and _inside(path, self.root):
                raise PkiError(f"{path} has mode {mode:04o}, readable by other users: make it private "
                               f"(chmod 600 {path}) and, as the key may have been read, rotate it "
                               f"(rotate_key or force)", "mode")
            # plain reads, thousands of small files per run: one read gets the whole file, unless it was short or
            # the file grew since fstat
            data = os.read(fd, st.st_size + 1)
            chunk = data if len(data) != st.st_size else b""
            while chunk:
                chunk = os.read(fd, 1 << 16)
                data += chunk
        finally:
            os.close(fd)
        return data

    def _remember(self, path, digest):
        """Keep the digest of what a read returned; a file read twice with different contents gets none
        (``CHANGED``), so no one takes either read for what the file holds."""
        if self.digests.setdefault(path, digest) != digest:
            self.digests[path] = CHANGED

    def load_index(self):
        """The index as on disk; refused, naming what is wrong, when it is not valid JSON of the index's
        shape (a refused index is never overwritten). ``Transaction.commit`` later writes it only if the
        file is still what was loaded here, so an index that lost another run's records is never written."""
        data = self.read(self.index_path)
        self._loaded_index = data
        if data is None:
            return Index()
        try:
            parsed = json.loads(data)
        except ValueError:
            raise PkiError(f"{self.index_path} is not valid JSON (corrupted); restore it from a backup",
                           "corrupt") from None
        problem = index_problem(parsed)
        if problem:
            raise PkiError(f"{self.index_path} is not a valid index: {problem}; restore it from a backup "
                           f"(it was left untouched)", "corrupt")
        return Index(parsed)

    def transaction(self):
        return Transaction(self)


RECORD_KEYS = ("kind", "name", "issuer", "serial", "status")


def index_problem(data):
    """What is wrong with the shape of a parsed index, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object with 'issued' and 'bundles', got a {type(data).__name__}"
    if data.get("version", 1) != 1:
        return f"unknown version {data.get('version')!r} (this collection reads version 1)"
    issued, bundles = data.get("issued", []), data.get("bundles", {})
    if not isinstance(issued, list):
        return f"'issued' must be a list, got a {type(issued).__name__}"
    if not isinstance(bundles, dict):
        return f"'bundles' must be an object, got a {type(bundles).__name__}"
    travelled = data.get("travelled", {})
    if not isinstance(travelled, dict) or not all(isinstance(v, str) for v in travelled.values()):
        return "'travelled' must be an object of SPKI SHA-256 -> certificate name"
    for i, r in enumerate(issued):
        if not isinstance(r, dict):
            return f"issued[{i}] must be an object, got {r!r}"
        missing = [k for k in RECORD_KEYS if not isinstance(r.get(k), str)]
        if missing:
            return f"issued[{i}] lacks the text field(s) {', '.join(missing)}"
    return None


class Index:
    """The issuance record: every certificate issued (serial, names, status), bundle metadata, and the keys
    that travelled (made by the control node, then left it when their leaf's key moved to its host)."""

    def __init__(self, data=None):
        data = data or {}
        self.records = data.get("issued", [])
        self.bundles = data.get("bundles", {})
        self.travelled = data.get("travelled", {})  # SHA-256 of the key's SubjectPublicKeyInfo -> leaf name
        self._serials = {(r["issuer"], r["serial"]) for r in self.records}
        self.changed = False  # a record added since it was loaded

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
        self.changed = True

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

    def add_travelled(self, public_der, name):
        """Remember a key the control node made for leaf ``name`` and gave away: it is never certified again."""
        self.travelled[hashlib.sha256(public_der).hexdigest()] = name
        self.changed = True

    def travelled_for(self, public_der):
        """The leaf whose pushed key this is (``public_der``: its SubjectPublicKeyInfo), or None."""
        return self.travelled.get(hashlib.sha256(public_der).hexdigest())

    def current(self, kind, name):
        for r in reversed(self.records):
            if r["kind"] == kind and r["name"] == name:
                return r
        return None

    def dumps(self):
        data = {"version": 1, "issued": self.records, "bundles": self.bundles}
        if self.travelled:
            data["travelled"] = self.travelled
        return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"


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
        self._placed = set()  # directories of files place() put there, not synced yet

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
                self.store.check_path(path)
                self._made += _makedirs(os.path.dirname(path))
                self._prepared[path] = (_write_temp(path, data, mode, sync=sync), data, mode, sync)
        except BaseException as e:
            self.abort()
            raise_write_error(self.store, e)
            raise

    def place(self, path, data, mode=PUBLIC_MODE):
        """Put one file in place now, from any thread, outside what is staged: a temp file renamed over ``path``,
        so a kill at any moment leaves the old file or the new one, never a part; kept whatever becomes of the
        transaction, and made durable by its ``commit`` (or ``abort``). For what must survive the run failing
        later (e.g. a certificate OpenBao issued, so that a re-run deploys it instead of signing it again)."""
        self.store.check_path(path)
        _makedirs(os.path.dirname(path))
        sync = _syncfs() is None  # else one syncfs in commit or abort
        tmp = _write_temp(path, data, mode, sync=sync)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if sync:
            _fsync_dir(os.path.dirname(path))
        else:
            self._placed.add(os.path.dirname(path))

    def plan_temps(self, extra=()):
        """Make the directories of everything staged and name its temp files without writing them, for
        writers in other processes; ``extra`` [(path, mode)] stages files whose content only such a writer
        makes (e.g. bundles). Returns {path: (temp path, data, mode)} (``data`` is ``EXTERNAL`` for ``extra``).
        The writers must write exactly these temp files (``write_temp``); ``commit`` renames them, ``abort``
        removes whatever was written."""
        synced = _syncfs() is None  # without syncfs the writers fsync each file (``write_temp``)
        for path, mode in extra:
            self.pending[path] = (EXTERNAL, mode)
        planned, parents = {}, set()
        try:
            for path, (data, mode) in self.pending.items():
                if data is None or path in self._prepared:
                    continue
                self.store.check_path(path)
                parent = os.path.dirname(path)
                if parent not in parents:
                    parents.add(parent)
                    if not os.path.isdir(parent):  # made by the writer (``write_temp``), in parallel
                        self._made += _makedirs(os.path.dirname(parent)) + [parent]
                tmp = _temp_name(path)
                self._prepared[path] = (tmp, data, mode, synced)
                planned[path] = (tmp, data, mode)
        except BaseException as e:
            self.abort()
            raise_write_error(self.store, e)
            raise
        return planned

    def abort(self):
        """Forget what is staged; remove the temp files and directories ``prepare`` made (what ``place`` put in
        place stays, synced)."""
        if self._placed:
            with contextlib.suppress(OSError):
                _sync_filesystems(self._placed)
            self._placed = set()
        for tmp, *_rest in self._prepared.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in reversed(self._made):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        self.pending, self._prepared, self._made = {}, {}, []

    def commit(self):
        temps, done = [], []  # done: (path, how to put back what was there: see _set_aside)
        made, prepared = self._made, self._prepared
        self._made, self._prepared = [], {}
        try:
            self._check_index_unchanged()
            removals = [p for p, (data, _mode) in self.pending.items() if data is None]
            # A large transaction (e.g. a thousand leaves) syncs once per filesystem instead of once per
            # file: the same guarantee (every temp file on disk before the first rename, every rename on
            # disk before commit returns) for one flush instead of thousands.
            batch = _syncfs() is not None and (len(self.pending) >= BATCH_SYNC_MIN or bool(self._placed)
                                               or any(not synced for *_rest, synced in prepared.values()))
            dirs, self._placed = set(self._placed), set()
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
                if data is EXTERNAL:
                    raise ValueError(f"{path}: staged for another process, which has not written it")
                if parent not in dirs:
                    self.store.check_path(path)
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
            new_dirs = set(made)  # made by this transaction: nothing in them to put back
            for tmp, path in sorted(temps, key=lambda t: not t[1].endswith("key.pem")):
                old = None if os.path.dirname(path) in new_dirs else _set_aside(path, keep=True)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    if isinstance(old, str):  # the file was not replaced: only drop its link
                        os.unlink(old)
                    raise
                done.append((path, old))
            for path in removals:
                old = _set_aside(path, keep=False)
                if old is not None:
                    done.append((path, old))
            dirs |= {os.path.dirname(p) for p in removals}
            if batch:
                _sync_filesystems(dirs)
            else:
                for d in dirs:
                    _fsync_dir(d)
        except BaseException as e:
            for tmp in [t for t, _path in temps] + [t for t, *_rest in prepared.values()]:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for path, old in reversed(done):
                with contextlib.suppress(OSError):
                    if old is None:
                        os.unlink(path)
                    elif isinstance(old, str):  # the old file, hard-linked aside
                        os.replace(old, path)
                    else:
                        os.replace(_write_temp(path, *old), path)
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            raise_write_error(self.store, e)
            raise
        else:
            for _path, old in done:
                if isinstance(old, str):
                    with contextlib.suppress(OSError):
                        os.unlink(old)
        finally:
            self.pending = {}

    def _check_index_unchanged(self):
        """Never write an index that lost records: if index.json changed since this run loaded it (a run
        that ignored the lock), fail rather than overwrite it."""
        index_path = self.store.index_path
        if index_path not in self.pending or not hasattr(self.store, "_loaded_index"):
            return
        if self.store.read(index_path) != self.store._loaded_index:
            raise PkiError(f"{index_path} was changed by another run while this one held the store's lock (was "
                           f"the store's lock bypassed?); nothing was written, run again", "index_changed")


def _inside(path, root):
    return os.path.commonpath([os.path.abspath(path), root]) == root


def _set_aside(path, keep):
    """Keep the file at ``path`` for a rollback: hard-linked (``keep``) or renamed to ``<path>.tmp-<pid>.old``
    (no data copied, so this works on a full disk); returns that name, or None when there is no file. Where
    hard links are not supported, the content and mode are kept in memory instead."""
    aside = f"{path}.tmp-{os.getpid()}.old"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)
    try:
        if keep:
            os.link(path, aside, follow_symlinks=False)
        else:
            os.rename(path, aside)
        return aside
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    st = os.lstat(path)
    with open(path, "rb") as f:
        old = (f.read(), stat.S_IMODE(st.st_mode))
    if not keep:
        os.unlink(path)
    return old


def raise_write_error(store, error):
    """An OSError while writing the store as a PkiError naming the error (e.g. ENOSPC) and the file."""
    if isinstance(error, OSError) and not isinstance(error, PkiError):
        code = errno.errorcode.get(error.errno, "error")
        raise PkiError(f"writing the store {store.root} failed: {error.strerror or error} ({code})"
                       + (f" on {error.filename}" if error.filename else "")
                       + "; every file was left as it was before this run", code.lower()) from error


class _External(bytes):
    """The content of a file staged by ``plan_temps(extra)``: written by another process."""


EXTERNAL = _External()


def _temp_name(path):
    return f"{path}.tmp-{os.getpid()}"


def write_temp(tmp, data, mode):
    """Write a temp file named by ``Transaction.plan_temps`` (in a worker process): fsynced only where the
    commit cannot sync the filesystem at once."""
    try:
        _write_temp(None, data, mode, sync=_syncfs() is None, tmp=tmp)
    except FileNotFoundError:  # a new leaf's directory: plan_temps left making it to the writers
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.dirname(tmp), DIR_MODE)
        _write_temp(None, data, mode, sync=_syncfs() is None, tmp=tmp)


def sync_ahead(path):
    """Flush the filesystem of ``path`` now, where the commit syncs whole filesystems: a writer process that is
    done does it while the others still work, so the commit's own sync (the guarantee) finds little left to do.
    A failure is left for that sync to report."""
    if _syncfs() is not None:
        with contextlib.suppress(OSError):
            _syncfs()(os.path.dirname(path))


def write_cache(path, data, mode):
    """Replace a cache file (e.g. ``verified.json``) atomically, without syncing: lost or torn by a crash, a
    cache is only ignored. A failure to write it (e.g. a full disk) leaves the old one and is not an error."""
    with contextlib.suppress(OSError):
        tmp = _write_temp(path, data, mode, sync=False)
        try:
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise


def _write_temp(path, data, mode, sync=True, tmp=None):
    """Write ``data`` to a temp file next to ``path`` (or to ``tmp``) (mode set, fsynced unless the caller
    syncs the whole batch); returns the temp path."""
    tmp = tmp or _temp_name(path)
    # private (0600) from the first byte, whatever the umask; its final mode is set once it is complete
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, KEY_MODE)
    try:
        try:
            os.fchmod(fd, KEY_MODE)
            view = memoryview(data)
            while view:  # os.write may write less than asked (e.g. a nearly full disk): never truncate
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
                view = view[written:]
            if mode != KEY_MODE:
                os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:
            e.filename = tmp
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
