"""PKCS#12 bundles in two encryption profiles."""

import os
import sys

from ..cryptography_dep import record_missing

try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat, pkcs12
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

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
# many bundles on, ``Batch`` spreads the work over forked worker processes (Linux, more than one CPU).
PARALLEL_MIN = 16
_BATCHES = {}  # id -> jobs, inherited by the forked workers (keys never cross a pipe; only bundles come back)


def bundles(jobs):
    """``bundle(*job)`` for each (spec, key, cert, chain) in ``jobs``, in order."""
    batch = Batch(jobs)
    try:
        return batch.get()
    finally:
        batch.close()


class Batch:
    """Bundles for ``jobs`` [(spec, key, cert, chain)], started at once in worker processes when there are
    enough of them (``parallel``), so the caller can go on meanwhile; ``get`` returns them in order (made here
    and now when not parallel). Always ``close`` it."""

    def __init__(self, jobs):
        self.jobs, self._pool, self._async = jobs, None, None
        workers = _workers(jobs)
        if workers < 2:
            return
        import multiprocessing
        _BATCHES[id(self)] = jobs
        try:
            self._pool = multiprocessing.get_context("fork").Pool(workers, _die_with_parent, (os.getpid(),))
        except (OSError, ValueError):  # no fork here, or no processes left: make them in this one
            _BATCHES.pop(id(self), None)
            return
        self._async = self._pool.map_async(_bundle_at, [(id(self), i) for i in range(len(jobs))],
                                           chunksize=max(1, len(jobs) // (workers * 8)))

    @property
    def parallel(self):
        return self._async is not None

    def get(self):
        if self._async is None:
            return [bundle(*job) for job in self.jobs]
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


def _bundle_at(where):
    batch, i = where
    return bundle(*_BATCHES[batch][i])


def _workers(jobs):
    if sum(1 for spec, *_rest in jobs if spec.password) < PARALLEL_MIN or not sys.platform.startswith("linux"):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(cpus, 8, len(jobs) // (PARALLEL_MIN // 2))
