"""PKCS#12 bundles in two encryption profiles."""

import contextlib
import hashlib
import os
import pickle  # nosec B403: a forked writer answers its parent over a private pipe
import signal
import sys

from ..cryptography_dep import record_missing

try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat, pkcs12
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import store
from .errors import PkiError

# modern: AES-256-CBC with PBKDF2-HMAC-SHA256 and a SHA-256 MAC (OpenSSL 3 default; macOS 14+,
#         Windows 10 1709+, Java 11.0.12+, Firefox, Chromium/NSS).
# compat: PBE-SHA1-3DES and a SHA-1 MAC, readable by older macOS keychains, Windows and Java keystores.
_KDF_ROUNDS = {"modern": 20000, "compat": 2048}


def _encryption(profile, password):
    builder = PrivateFormat.PKCS12.encryption_builder().kdf_rounds(_KDF_ROUNDS[profile])
    if profile == "modern":
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
    return builder.build(password.encode())


def bundle(spec, key, cert, chain):
    """Serialize key, certificate and (optionally) the CA chain; ``spec`` is a Pkcs12Spec."""
    cas = list(chain) if spec.include_chain else None
    enc = _encryption(spec.encryption, spec.password) if spec.password else NoEncryption()
    return pkcs12.serialize_key_and_certificates(spec.friendly_name.encode(), key, cert, cas or None, enc)


# Serializing a `modern` bundle costs two PBKDF2 derivations of 20000 rounds (~5 ms on one core); from this
# many bundles (or PARALLEL_MIN * 8 other files) on, ``Batch`` spreads a run's writing over forked worker
# processes (Linux, more than one CPU).
PARALLEL_MIN = 16


def workers(n_bundles, n_files):
    """How many worker processes a Batch of ``n_bundles`` password-protected bundles and ``n_files`` other
    files gets: 1 (none: in this process) when there is little work, no fork or one CPU."""
    if (n_bundles < PARALLEL_MIN and n_files < PARALLEL_MIN * 8) or not sys.platform.startswith("linux"):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8, max(n_bundles * 2 // PARALLEL_MIN, n_files // PARALLEL_MIN)))


class Batch:
    """The temp files of a transaction (``store.Transaction.plan_temps``), written by forked worker processes
    while the caller goes on. Each item is (bundle job (spec, key, cert, chain) or None, the bundle's temp path,
    [(temp path, data, mode)] of other files). ``add`` forks its writers at once: they inherit their items, so
    keys never cross a pipe, and only the bundles' digests come back. A caller can add while earlier writers
    run (e.g. sign the next leaves meanwhile). ``get`` returns the SHA-256 (hex) of each item's bundle (None
    without one), in the order added; what no process took (a fork failed) it writes here and now. Always
    ``close`` it: writers still running are killed."""

    def __init__(self):
        # parts: [first, end, pid, read fd]; pid None: no writer took them (get writes them), 0: answer collected
        self.items, self.plans, self._parts = [], [], []
        self.forked = 0

    @property
    def parallel(self):
        return self.forked > 0

    def add(self, items, plans, processes=1):
        """Hand ``items`` to ``processes`` new writers; ``plans`` (one per item, or None) are for the caller."""
        if len(plans) != len(items):
            raise ValueError(f"{len(items)} items but {len(plans)} plans")
        first = len(self.items)
        self.items += items
        self.plans += plans
        size = max(1, -(-len(items) // max(1, processes)))
        for lo in range(first, len(self.items), size):
            hi = min(lo + size, len(self.items))
            self._parts.append([lo, hi, *self._fork(lo, hi)])

    def _fork(self, lo, hi):
        parent = os.getpid()
        try:
            read, write = os.pipe()
        except OSError:  # no file descriptors left: get() writes these here
            return None, None
        try:
            pid = os.fork()
        except OSError:  # no processes left: get() writes these here
            os.close(read)
            os.close(write)
            return None, None
        if pid == 0:  # the writer: whatever happens, it never returns into the caller's code
            try:
                os.close(read)
                _work(self.items[lo:hi], write, parent)
            finally:
                os._exit(1)
        os.close(write)
        self.forked += 1
        return pid, read

    def get(self):
        """The digests, once: writes what no writer took, then waits for each writer's answer."""
        out = [None] * len(self.items)
        for lo, hi, pid, _fd in self._parts:
            if pid is None:
                out[lo:hi] = [_write_item(item) for item in self.items[lo:hi]]
        for part in self._parts:
            if part[2]:
                out[part[0]:part[1]] = _collect(part)
        return out

    def close(self):
        for part in self._parts:
            if part[2]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(part[2], signal.SIGKILL)
                with contextlib.suppress(OSError):
                    _collect(part, check=False)
        self._parts = []


def _work(items, fd, parent):
    """A writer's life: write ``items``, send back ("ok", digests) or ("error", the exception), exit."""
    code = 1
    try:
        _die_with_parent(parent)
        try:
            out = ("ok", [_write_item(item) for item in items])
            if items:  # any temp path of ours names the store's filesystem: the first bundle's, or first file's
                store.sync_ahead(items[0][1] or items[0][2][0][0])
        except BaseException as e:  # pylint: disable=broad-exception-caught  # the parent raises it
            out = ("error", e)
        try:
            data = pickle.dumps(out)
            pickle.loads(data)  # nosec B301: the parent must be able to read it back
        except Exception:  # pylint: disable=broad-exception-caught  # an exception that does not travel
            data = pickle.dumps(("error", RuntimeError(repr(out[1]))))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        code = 0
    finally:
        os._exit(code)


def _collect(part, check=True):
    """Read a writer's answer and reap it; returns its digests (raises what it raised)."""
    pid, fd = part[2], part[3]
    part[2], part[3] = 0, None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    finally:
        status = None
        with contextlib.suppress(ChildProcessError):  # already reaped (SIGCHLD ignored)
            status = os.waitpid(pid, 0)[1]
    if not check:
        return None
    if not data or status not in (None, 0):
        raise PkiError(f"a worker process writing the store's files died ({_describe(status)}, e.g. out of memory); "
                       f"nothing was written, run again", "writer_died")
    kind, value = pickle.loads(data)  # nosec B301: from our own forked child, over its private pipe
    if kind == "error":
        raise value
    return value


def _describe(status):
    if status is None:
        return "no answer"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _die_with_parent(parent):
    """A worker holds keys in memory: when the module dies (kill -9) it dies at once, not after its items."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _write_item(item):
    job, bundle_tmp, files = item
    for tmp, data, mode in files:
        store.write_temp(tmp, data, mode)
    if job is None:
        return None
    data = bundle(*job)
    store.write_temp(bundle_tmp, data, store.KEY_MODE)
    return hashlib.sha256(data).hexdigest()
