"""Many leaves in one run: forked workers write the temp files and make the bundles (pkcs12.Batch).

The thresholds are lowered so a handful of leaves takes the parallel path; what it writes must be what the
serial path writes (bundles that open with their password and hold the leaf's key, index metadata that
matches the file), a re-run must leave every file alone, and a worker that fails must leave the store as it
was (no temp file, no new directory, no half-set of files).
"""

import errno
import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12

from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys, pkcs12
from pkitest import by_name, issue, snapshot, temp_files

P12 = {"password": "batch-pass", "encryption": "modern"}


class TwoPartError(Exception):
    """Pickles, but does not unpickle: its __init__ needs two arguments and its args hold one."""

    def __init__(self, first, second):
        super().__init__(f"{first}: {second}")


def _leaves(count, prefix="c"):
    return [{"name": f"{prefix}{i}", "common_name": f"{prefix}{i}", "profile": "client", "pkcs12": P12}
            for i in range(count)]


def _fails_as_writer_died(pki, count, detail):
    """A forced run of ``count`` leaves fails as writer_died, naming ``detail``; the store is as it was."""
    before = snapshot(pki.root)
    with pytest.raises(Exception) as info:
        issue(pki, "int", _leaves(count), force=True)
    assert getattr(info.value, "code", None) == "writer_died", info.value
    assert detail in str(info.value)
    assert snapshot(pki.root) == before and temp_files(pki.root) == []


@pytest.fixture
def parallel(monkeypatch):
    """Batches of 2+ bundles in workers; records whether each batch really ran in parallel."""
    assert len(os.sched_getaffinity(0)) >= 2, "the parallel path needs 2 CPUs (CI has them)"
    monkeypatch.setattr(pkcs12, "PARALLEL_MIN", 2)
    seen = []
    real = pkcs12.Batch.get

    def get(self):
        seen.append(self.parallel)
        return real(self)
    monkeypatch.setattr(pkcs12.Batch, "get", get)
    return seen


def test_workers_write_the_same_leaves_and_a_rerun_touches_nothing(pki, parallel):
    results = issue(pki, "int", _leaves(6))
    assert parallel == [True]
    assert {r["action"] for r in results} == {"issued"}
    index = pki.load_index()
    for i in range(6):
        name = f"c{i}"
        with open(pki.leaf_path(name, "bundle.p12"), "rb") as f:
            data = f.read()
        key, cert, cas = crypto_pkcs12.load_key_and_certificates(data, P12["password"].encode())
        with open(pki.leaf_path(name, "cert.pem"), "rb") as f:
            assert cert.public_bytes(crypto_pkcs12.serialization.Encoding.PEM) == f.read()
        assert keys.public_der(key) == keys.public_der(cert.public_key())
        assert len(cas) == 2
        assert index.bundles[name]["sha256"] == hashlib.sha256(data).hexdigest()
        for f in ("key.pem", "bundle.p12"):
            assert stat.S_IMODE(os.stat(pki.leaf_path(name, f)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(pki.leaf_path(name)).st_mode) == 0o700
    assert temp_files(pki.root) == []
    before = snapshot(pki.root)
    index_inode = os.stat(pki.index_path).st_ino
    again = issue(pki, "int", _leaves(6))
    assert {r["action"] for r in again} == {"unchanged"}
    assert snapshot(pki.root) == before and os.stat(pki.index_path).st_ino == index_inode


def test_a_failing_worker_leaves_the_store_as_it_was(pki, parallel, monkeypatch):
    issue(pki, "int", _leaves(4))
    real = pkcs12.bundle

    def full_disk_for_c5(spec, key, cert, chain):  # runs in the forked workers
        if cert.subject.rfc4514_string() == "CN=c5":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(spec, key, cert, chain)
    monkeypatch.setattr(pkcs12, "bundle", full_disk_for_c5)
    before = snapshot(pki.root)
    with pytest.raises(Exception) as info:  # renewals of c0..c3 and new leaves c4..c7
        issue(pki, "int", _leaves(8), force=True)
    assert getattr(info.value, "code", None) == "enospc", info.value
    assert snapshot(pki.root) == before
    assert not os.path.exists(pki.leaf_path("c4"))


def test_a_batch_of_host_keys_writes_only_certificates_and_chains(pki, parallel, monkeypatch):
    """Host keys: no key and no bundle in the store, the certificate files still written by workers."""
    monkeypatch.setattr(pkcs12, "PARALLEL_MIN", 1)
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import csr as csr_mod
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    items, reports = [], {}
    for i in range(12):
        name = f"h{i}"
        key = ec.generate_private_key(ec.SECP256R1())
        req = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256()))
        items.append({"name": name, "common_name": name, "profile": "client", "key_location": "host"})
        reports[name] = csr_mod.host_report(name, req.public_bytes(serialization.Encoding.PEM))
    results = by_name(issue(pki, "int", items, reports=reports))
    assert parallel == [True]
    for name, r in results.items():
        assert r["action"] == "issued"
        assert sorted(os.listdir(pki.leaf_path(name))) == ["ca.pem", "cert.pem", "chain.pem", "fullchain.pem"]
    assert temp_files(pki.root) == []


def test_writers_start_while_later_leaves_are_still_being_signed(pki, parallel, monkeypatch):
    """Many leaves are signed and written in chunks: the first chunk's writer is forked before the last chunk is
    signed, so bundling overlaps signing; what lands in the store is the same."""
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.local import LocalBackend
    events = []
    real_sign, real_fork = LocalBackend.sign_many, pkcs12.Batch._fork

    def sign_many(self, issuer, requests, *args, **kwargs):
        events.append(("sign", len(requests)))
        return real_sign(self, issuer, requests, *args, **kwargs)

    def fork(self, lo, hi):
        events.append(("fork", hi - lo))
        return real_fork(self, lo, hi)
    monkeypatch.setattr(LocalBackend, "sign_many", sign_many)
    monkeypatch.setattr(pkcs12.Batch, "_fork", fork)
    results = issue(pki, "int", _leaves(16))
    signs = [i for i, (kind, _n) in enumerate(events) if kind == "sign"]
    forks = [i for i, (kind, _n) in enumerate(events) if kind == "fork"]
    assert len(signs) > 1 and forks and forks[0] < signs[-1], events
    assert sum(n for kind, n in events if kind == "sign") == 16
    assert {r["action"] for r in results} == {"issued"} and parallel == [True]
    for i in range(16):
        with open(pki.leaf_path(f"c{i}", "bundle.p12"), "rb") as f:
            _key, cert, _cas = crypto_pkcs12.load_key_and_certificates(f.read(), P12["password"].encode())
        assert cert.subject.rfc4514_string() == f"CN=c{i}"
    assert temp_files(pki.root) == []
    assert {r["action"] for r in issue(pki, "int", _leaves(16))} == {"unchanged"}


def test_a_writer_killed_by_a_signal_fails_the_run_and_leaves_the_store_as_it_was(pki, parallel, monkeypatch):
    """A writer that dies without a word (the OOM killer, kill -9 of that process alone): the run fails saying so,
    the other writers are stopped, and the store is as it was, with no temp file."""
    import signal
    issue(pki, "int", _leaves(2))
    real = pkcs12.bundle

    def killed_at_c9(spec, key, cert, chain):  # runs in the forked writer
        if cert.subject.rfc4514_string() == "CN=c9":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(spec, key, cert, chain)
    monkeypatch.setattr(pkcs12, "bundle", killed_at_c9)
    _fails_as_writer_died(pki, 16, "signal 9")


def test_the_cyclic_collector_is_paused_for_a_run_and_left_as_it_was(pki, monkeypatch):
    import gc
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.local import LocalBackend
    seen, real = [], LocalBackend.sign_many

    def sign_many(self, *args, **kwargs):
        seen.append(gc.isenabled())
        return real(self, *args, **kwargs)
    monkeypatch.setattr(LocalBackend, "sign_many", sign_many)
    assert gc.isenabled()
    issue(pki, "int", _leaves(2))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(Exception, match="no-such-ca"):  # raised inside the run
        issue(pki, "no-such-ca", _leaves(2))
    assert gc.isenabled()
    gc.disable()
    try:
        issue(pki, "int", _leaves(3))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_many_derived_files_and_nothing_to_sign_are_written_by_workers(pki, parallel, monkeypatch):
    """Nothing to sign but a file of every leaf out of date (here each leaf's ca.pem, lost): written by workers in
    one go, as the store wants them, and a re-run touches nothing."""
    monkeypatch.setattr(pkcs12, "PARALLEL_MIN", 1)
    issue(pki, "int", _leaves(12))
    parallel.clear()
    with open(pki.leaf_path("c0", "ca.pem"), "rb") as f:
        want = f.read()
    for i in range(12):
        os.unlink(pki.leaf_path(f"c{i}", "ca.pem"))
    results = issue(pki, "int", _leaves(12))
    assert parallel == [True]
    assert {r["action"] for r in results} == {"updated"} and {tuple(r["reasons"]) for r in results} == {
        ("ca.pem out of date",)}
    for i in range(12):
        with open(pki.leaf_path(f"c{i}", "ca.pem"), "rb") as f:
            assert f.read() == want
    assert temp_files(pki.root) == []
    assert {r["action"] for r in issue(pki, "int", _leaves(12))} == {"unchanged"}


def test_no_process_left_to_fork_writes_everything_here(pki, parallel, monkeypatch):
    """fork fails (EAGAIN: the user's process limit): the run writes the chunks in its own process instead."""
    def no_fork():
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    monkeypatch.setattr(pkcs12.os, "fork", no_fork)
    results = issue(pki, "int", _leaves(6))
    assert parallel == [False] and {r["action"] for r in results} == {"issued"}
    for i in range(6):
        with open(pki.leaf_path(f"c{i}", "bundle.p12"), "rb") as f:
            key, cert, _cas = crypto_pkcs12.load_key_and_certificates(f.read(), P12["password"].encode())
        assert keys.public_der(key) == keys.public_der(cert.public_key())
    assert temp_files(pki.root) == []
    assert {r["action"] for r in issue(pki, "int", _leaves(6))} == {"unchanged"}


def test_a_writer_that_fails_before_its_work_never_runs_the_callers_code(pki, parallel, monkeypatch):
    """An exception in the forked writer before it is under way (here _work itself raising) ends that process: it
    never unwinds into the caller's except and finally clauses (which would kill its siblings and abort the
    parent's transaction from the child). The parent sees a writer that died and leaves the store as it was."""
    issue(pki, "int", _leaves(2))

    def broken(*_args):
        raise RuntimeError("broken before the work")
    monkeypatch.setattr(pkcs12, "_work", broken)
    _fails_as_writer_died(pki, 8, "exit status 1")


def test_a_writer_error_that_cannot_travel_back_is_reported_by_its_text(pki, parallel, monkeypatch):
    issue(pki, "int", _leaves(2))
    real = pkcs12.bundle

    def fails_at_c5(spec, key, cert, chain):  # runs in the forked writer
        if cert.subject.rfc4514_string() == "CN=c5":
            raise TwoPartError("the token store", "refused")
        return real(spec, key, cert, chain)
    monkeypatch.setattr(pkcs12, "bundle", fails_at_c5)
    before = snapshot(pki.root)
    with pytest.raises(RuntimeError, match="the token store: refused"):
        issue(pki, "int", _leaves(8), force=True)
    assert snapshot(pki.root) == before and temp_files(pki.root) == []
