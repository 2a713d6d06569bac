"""PKCS#12 bundles in two encryption profiles."""

import hashlib
import os
import sys

from ..cryptography_dep import record_missing

try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat, pkcs12
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import store

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


# Serializing a `modern` bundle costs two PBKDF2 derivations of 20000 rounds (~7 ms on one core); from this
# many bundles (or PARALLEL_MIN * 8 other files) on, ``Batch`` spreads a run's writing over forked worker
# processes (Linux, more than one CPU).
PARALLEL_MIN = 16
_BATCHES = {}  # id -> items, inherited by the forked workers (keys never cross a pipe; only digests come back)


def bundles(jobs):
    """``bundle(*job)`` for each (spec, key, cert, chain) in ``jobs``, in order."""
    return [bundle(*job) for job in jobs]


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
    while the caller goes on: each item is (bundle job (spec, key, cert, chain) or None, the bundle's temp path,
    [(temp path, data, mode)] of other files). ``get`` returns the SHA-256 (hex) of each item's bundle (None
    without one), in order. With one worker (``workers``) or when fork fails, ``get`` writes them here and
    now. Always ``close`` it."""

    def __init__(self, items, n_workers):
        self.items, self._pool, self._async = items, None, None
        if n_workers < 2:
            return
        import multiprocessing
        _BATCHES[id(self)] = items
        try:
            self._pool = multiprocessing.get_context("fork").Pool(n_workers, _die_with_parent, (os.getpid(),))
        except (OSError, ValueError):  # no fork here, or no processes left: write them in this one
            _BATCHES.pop(id(self), None)
            return
        self._async = self._pool.map_async(_item_at, [(id(self), i) for i in range(len(items))],
                                           chunksize=max(1, len(items) // (n_workers * 8)))

    @property
    def parallel(self):
        return self._async is not None

    def get(self):
        if self._async is None:
            return [_write_item(item) for item in self.items]
        return self._async.get()

    def close(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        _BATCHES.pop(id(self), None)


def _die_with_parent(parent):
    """A worker holds keys in memory: when the module dies (kill -9) it dies at once, not after its chunk."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _item_at(where):
    batch, i = where
    return _write_item(_BATCHES[batch][i])


def _write_item(item):
    job, bundle_tmp, files = item
    for tmp, data, mode in files:
        store.write_temp(tmp, data, mode)
    if job is None:
        return None
    data = bundle(*job)
    store.write_temp(bundle_tmp, data, store.KEY_MODE)
    return hashlib.sha256(data).hexdigest()
