"""The store: staged atomic commits (no temp files, no half-sets on failure), the lock, the index."""

import json
import multiprocessing
import os
import threading

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import pem
from ansible_collections.mtls.rollout.plugins.module_utils.pki import store as store_mod
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from pkitest import assert_refused, issue, leaf_cert, make_ca, snapshot, temp_files

FORK = multiprocessing.get_context("fork")
ITEMS = [{"name": "web", "dns": "web.example.com", "pkcs12": {"password": "pw"}},
         {"name": "alice", "profile": "client", "common_name": "alice"}]


class FailingReplace:
    """os.replace that raises once, on its n-th call (or on the first call whose target matches)."""

    def __init__(self, monkeypatch, n=None, target=None):
        self.n, self.target, self.calls, self.real = n, target, 0, os.replace
        monkeypatch.setattr(os, "replace", self)

    def __call__(self, src, dst):
        self.calls += 1
        hit = self.calls == self.n if self.n is not None else str(dst).endswith(self.target)
        if hit and not getattr(self, "fired", False):
            self.fired = True
            raise OSError(28, "No space left on device (injected)")
        return self.real(src, dst)


def test_successful_runs_leave_no_temp_files(pki):
    issue(pki, "int", ITEMS)
    issue(pki, "int", ITEMS, force=True)
    assert not temp_files(pki.root)
    assert sorted(os.listdir(pki.leaf_path("web"))) == ["bundle.p12", "ca.pem", "cert.pem", "chain.pem",
                                                        "fullchain.pem", "key.pem"]


@pytest.mark.parametrize("fail_at", [1, 2, 5, "cert.pem", "bundle.p12", "index.json"])
def test_failed_commit_of_a_renewal_restores_everything(pki, monkeypatch, fail_at):
    issue(pki, "int", ITEMS)
    before = snapshot(pki.root)
    if isinstance(fail_at, int):
        injected = FailingReplace(monkeypatch, n=fail_at)
    else:
        injected = FailingReplace(monkeypatch, target=fail_at)
    with pytest.raises(PkiError, match="injected"):
        issue(pki, "int", [{**ITEMS[0], "rotate_key": True}, ITEMS[1]], force=True)
    assert injected.fired
    assert not temp_files(pki.root)
    assert snapshot(pki.root) == before  # not a half-set: every renamed file is put back
    monkeypatch.undo()
    results = issue(pki, "int", ITEMS)
    assert {r["action"] for r in results} == {"unchanged"}  # the store is consistent: cert, key, index agree


@pytest.mark.parametrize("fail_at", [1, 3, "index.json"])
def test_failed_commit_of_new_leaves_leaves_no_trace(pki, monkeypatch, fail_at):
    before = snapshot(pki.root)
    injected = FailingReplace(monkeypatch, **({"n": fail_at} if isinstance(fail_at, int) else {"target": fail_at}))
    with pytest.raises(PkiError, match="injected"):
        issue(pki, "int", ITEMS)
    assert injected.fired
    assert snapshot(pki.root) == before  # no file, no empty certs/<name>/ directory
    assert not os.path.exists(os.path.join(pki.root, "certs"))


def test_failure_while_writing_temp_files_touches_nothing(pki, monkeypatch):
    issue(pki, "int", ITEMS)
    before = snapshot(pki.root)
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(5, "I/O error (injected)")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(PkiError, match="injected"):
        issue(pki, "int", ITEMS, force=True)
    assert snapshot(pki.root) == before
    assert not temp_files(pki.root)


def test_failed_ca_commit_restores_the_ca(pki, monkeypatch):
    before = snapshot(pki.root)
    FailingReplace(monkeypatch, target="index.json")
    with pytest.raises(PkiError, match="injected"):
        make_ca(pki, "int", "root", force=True, rotate_key=True)
    assert snapshot(pki.root) == before


def test_transaction_rolls_back_removals_and_modes(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    keep, gone = str(tmp_path / "a" / "keep.pem"), str(tmp_path / "a" / "gone.p12")
    txn = store.transaction()
    txn.write(keep, b"old", 0o600)
    txn.write(gone, b"bundle", 0o600)
    txn.commit()
    before = snapshot(str(tmp_path))
    txn = store.transaction()
    txn.remove(gone)
    txn.write(keep, b"new", 0o644)
    txn.write(str(tmp_path / "b" / "c" / "new.pem"), b"x")

    def fail(path):  # after every rename and removal: all of them must be undone
        raise OSError(5, "I/O error (injected)")
    monkeypatch.setattr(store_mod, "_fsync_dir", fail)
    with pytest.raises(PkiError, match="I/O error"):
        txn.commit()
    assert snapshot(str(tmp_path)) == before
    assert txn.pending == {}
    # without a failure the same transaction lands completely
    monkeypatch.undo()
    txn = store.transaction()
    txn.remove(gone)
    txn.write(keep, b"new", 0o644)
    txn.commit()
    assert not os.path.exists(gone) and open(keep, "rb").read() == b"new"
    assert os.stat(keep).st_mode & 0o777 == 0o644


def test_changed_stages_only_differences(tmp_path):
    store = Store(str(tmp_path))
    path = str(tmp_path / "x" / "key.pem")
    txn = store.transaction()
    assert txn.changed(path, b"k") is True
    assert txn.pending[path] == (b"k", 0o600)  # keys and bundles get 0600 automatically
    txn.commit()
    txn = store.transaction()
    assert txn.changed(path, b"k") is False and txn.pending == {}


# --- the lock --------------------------------------------------------------------------------------

def _issue_many(root, prefix, count, errors):
    try:
        store = Store(root)
        for i in range(count):
            issue(store, "int", [{"name": f"{prefix}{i}", "dns": f"{prefix}{i}.example.com"},
                                 {"name": "shared", "dns": "shared.example.com"}])
    except BaseException as e:  # reported to the parent, which fails the test
        errors.put(f"{prefix}: {e!r}")
        raise


def test_two_processes_issuing_concurrently_keep_the_store_consistent(pki):
    errors = FORK.Queue()
    workers = [FORK.Process(target=_issue_many, args=(pki.root, p, 6, errors)) for p in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0], errors.get(timeout=1) if not errors.empty() else ""

    data = json.loads(open(pki.index_path, "rb").read())  # valid JSON, not a torn write
    leaves = [r for r in data["issued"] if r["kind"] == "leaf"]
    names = sorted(r["name"] for r in leaves)
    # each name issued exactly once: 'shared' by whichever run came first, the other saw it unchanged
    assert names == sorted([f"{p}{i}" for p in "ab" for i in range(6)] + ["shared"])
    serials = [(r["issuer"], r["serial"]) for r in data["issued"]]
    assert len(set(serials)) == len(serials)
    for r in leaves:
        cert = leaf_cert(pki, r["name"])
        assert r["fingerprint_sha256"] == pem.fingerprint(cert) and r["status"] == "valid"
    assert not temp_files(pki.root)
    assert {r["action"] for r in issue(pki, "int", [{"name": n, "dns": f"{n}.example.com"} for n in names])} == {
        "unchanged"}


def _hold_lock(root, held, release):
    with Store(root).lock():
        held.set()
        release.wait(60)


@pytest.fixture
def lock_holder(pki):
    held, release = FORK.Event(), FORK.Event()
    proc = FORK.Process(target=_hold_lock, args=(pki.root, held, release))
    proc.start()
    assert held.wait(30), "the helper process did not take the lock"
    yield release
    release.set()
    proc.join(30)


class QuickStore(Store):
    """A store whose lock gives up after a fraction of a second (the modules wait up to 300 s)."""

    def lock(self, timeout=0.3, create=True):
        return super().lock(timeout=timeout, create=create)


def test_held_lock_times_out_with_a_clear_error(pki, lock_holder):
    quick = QuickStore(pki.root)
    assert_refused(quick, lambda: issue(quick, "int", ITEMS), f"the store {pki.root} is locked by another run",
                   "waited 0.3s", code="locked")
    assert_refused(quick, lambda: make_ca(quick, "other"), "locked by another run", code="locked")


def test_held_lock_makes_a_second_run_wait_then_proceed(pki, lock_holder, monkeypatch):
    waiting, outcome = threading.Event(), {}
    real_sleep = store_mod.time.sleep

    def sleep(seconds):
        waiting.set()  # the run is in the lock's retry loop
        real_sleep(seconds)
    monkeypatch.setattr(store_mod.time, "sleep", sleep)

    def run():
        try:
            outcome["results"] = issue(pki, "int", ITEMS)
        except BaseException as e:
            outcome["error"] = e
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert waiting.wait(30)
        assert thread.is_alive() and not os.path.exists(pki.leaf_path("web"))  # nothing written while waiting
    finally:
        lock_holder.set()
        thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert [r["action"] for r in outcome["results"]] == ["issued", "issued"]


def test_check_mode_on_a_missing_store_takes_no_lock_and_creates_nothing(tmp_path):
    store = Store(str(tmp_path / "nowhere"))
    with store.lock(create=False):
        pass
    assert not os.path.exists(store.root)


# --- the index ------------------------------------------------------------------------------------

def test_corrupted_index_is_refused(pki):
    with open(pki.index_path, "wb") as f:
        f.write(b'{"issued": [')
    assert_refused(pki, lambda: issue(pki, "int", ITEMS), pki.index_path, "not valid JSON", code="corrupt")


def test_lost_index_is_reconciled_from_the_files(pki):
    issue(pki, "int", ITEMS)
    serial = pem.serial_hex(leaf_cert(pki, "web"))
    os.unlink(pki.index_path)
    results = issue(pki, "int", ITEMS)
    assert [(r["name"], r["action"]) for r in results] == [("web", "updated"), ("alice", "unchanged")]
    record = pki.load_index().current("leaf", "web")
    assert (record["serial"], record["reason"]) == (serial, "recorded")
    assert pki.load_index().has_serial("int", serial)


def test_reconciled_index_is_saved_even_when_no_file_changes(pki):
    issue(pki, "int", ITEMS[1:])
    serial = pem.serial_hex(leaf_cert(pki, "alice"))
    os.unlink(pki.index_path)
    assert issue(pki, "int", ITEMS[1:])[0]["action"] == "unchanged"
    index = pki.load_index()  # written to disk, not only reconciled in memory
    assert index.has_serial("int", serial)
    assert [(r["kind"], r["name"]) for r in index.records] == [("leaf", "alice")]
    assert make_ca(pki, "root")["action"] == make_ca(pki, "int", "root")["action"] == "unchanged"
    assert [(r["kind"], r["name"]) for r in pki.load_index().records] == [
        ("leaf", "alice"), ("ca", "root"), ("ca", "int")]
    before = snapshot(pki.root)
    issue(pki, "int", ITEMS[1:])
    make_ca(pki, "int", "root")
    assert snapshot(pki.root) == before


def test_index_dump_is_stable(pki):
    issue(pki, "int", ITEMS)
    data = open(pki.index_path, "rb").read()
    assert pki.load_index().dumps() == data and data.endswith(b"\n")


def test_store_paths_stay_inside_the_root(tmp_path):
    store = Store(str(tmp_path / "pki"))
    assert store.leaf_path("web", "cert.pem") == str(tmp_path / "pki" / "certs" / "web" / "cert.pem")
    assert store.ca_path("root", "key.pem") == str(tmp_path / "pki" / "ca" / "root" / "key.pem")
    assert Store("~/x").root == os.path.join(os.path.expanduser("~"), "x")


def test_lock_is_exclusive_per_open_file_description(pki):
    with pytest.raises(PkiError):
        with QuickStore(pki.root).lock():
            with QuickStore(pki.root).lock():  # a second open file description conflicts even in-process
                pass


def test_a_placed_file_is_kept_whole_whatever_becomes_of_the_transaction(pki, monkeypatch):
    """Transaction.place (a certificate OpenBao issued): in place at once, kept when the commit of the rest fails;
    a place that fails leaves the previous file and no temp file."""
    cert, chain = pki.leaf_path("placed", "cert.pem"), pki.leaf_path("placed", "chain.pem")
    txn = pki.transaction()
    txn.place(cert, b"issued\n")
    assert pki.read(cert) == b"issued\n"
    txn.write(chain, b"chain\n")
    FailingReplace(monkeypatch, target="chain.pem")
    with pytest.raises(PkiError, match="injected"):
        txn.commit()
    assert pki.read(cert) == b"issued\n" and pki.read(chain) is None and not temp_files(pki.root)
    monkeypatch.undo()
    FailingReplace(monkeypatch, target="cert.pem")
    with pytest.raises(OSError, match="injected"):
        pki.transaction().place(cert, b"another\n")
    assert pki.read(cert) == b"issued\n" and not temp_files(pki.root)
