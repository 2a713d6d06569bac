"""Ensure a list of leaf certificates from one issuing CA in one pass under one lock.

A leaf's key is made in the store (``key_location`` controller) or on the host that uses it (``host``):
then the host reports the public key of its key (a CSR) and the certificate it holds (``csr.HostReport``),
the same renewal policy decides from that, and only certificates and chains are written here. A host's
report the control node refuses (``HOST_REFUSALS``) fails that item alone: its result has ``failed`` and ``msg``,
and nothing of it is written, while the other items are issued or left alone as usual.
"""

import contextlib
import gc
import hashlib
import hmac
import json
import os
import queue
import threading
from dataclasses import dataclass, field

from . import constraints, issuance, key_reuse, keys, pem, pkcs12, renewal, specs as specs_mod
from . import store as store_mod
from . import verdicts as verdicts_mod
from .backends.base import SignError, Signed, SignRequest
from .backends.local import LocalBackend
from .errors import PkiError
from .store import KEY_MODE

# what a host reports that refuses its item only (the others go on): no or a bad CSR, a key of another type than
# the inventory's, the key the control node had pushed (it travelled), the key of another leaf
HOST_REFUSALS = ("no_csr", "bad_csr", "key_type", "key_location_changed", "key_reused")


@dataclass
class Plan:
    """What one leaf needs; filled in by ``_plan``, carried out by ``_issue``."""
    spec: object
    cert: object = None  # held now: in the store, or on the host for host keys
    key: object = None  # the private key (controller keys only)
    public_key: object = None  # the key to certify
    reasons: list = field(default_factory=list)
    new_key: bool = False
    warnings: list = field(default_factory=list)
    bundle_change: object = None  # 'bundle.p12' when the bundle is (re)written or removed
    undeployed: bool = False  # host key: the store's certificate for it has not reached the host yet
    refused: object = None  # the PkiError of a host report refused for this item alone (HOST_REFUSALS)
    csr_pem: object = None  # host key: the host's CSR, for a backend that signs CSRs
    error: object = None  # a backends.base.SignError when the backend did not sign it
    facts: dict = None  # up to date by its recorded verdict (verdicts.py): its files were hashed, not parsed
    signed: object = None  # a backends.base.Signed: the certificate issued in this run with its PEM and facts
    placed: tuple = ()  # host key: its files in the store as they should be since its certificate arrived (_Keep)


def ensure_leaves(store, issuer_name, specs, issuer_passphrase=None, renew_before_days=None, force=False,
                  check=False, now=None, reports=None, backend=None):
    """Issue, renew or leave alone every spec in ``specs``; returns one result dict per spec, in order.

    ``reports`` maps the name of each leaf whose key is on its host to that host's ``csr.HostReport`` (or the
    ``PkiError`` that refused what the host sent: that item fails alone).
    ``backend`` signs (``backends.base.Backend``; default the store's own CAs)."""
    now = now or pem.utcnow()
    backend = backend or LocalBackend(store)
    reports = reports or {}
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise PkiError(f"certificate name {spec.name!r} appears twice in the list: names must be unique")
        seen.add(spec.name)
    sweep = specs_mod.task_window_warnings(specs, renew_before_days)
    with _cyclic_gc_paused(), store.lock(create=not check):
        index = store.load_index()
        try:
            auth = backend.issuer(issuer_name, issuer_passphrase)
        except PkiError as e:  # check mode previews a first run, whose issuer an earlier task would create
            if not (check and e.code == "no_issuer"
                    and all(store.read(store.leaf_path(s.name, "cert.pem")) is None for s in specs)):
                raise
            return [dict(_result(store, Plan(s, reasons=["missing"], new_key=True), None, [], True),
                         warnings=[f"check mode: issuer {issuer_name!r} does not exist yet ({e})"]) for s in specs]
        holders = key_reuse.Holders(store)
        verdicts = verdicts_mod.Verdicts(store, verdicts_mod.context(
            pem.fingerprint(auth.cert), _issuer_pems(auth), renew_before_days))
        store.digests = {}  # what the full checks read, for recording their verdicts
        planned = [(None if force else _recorded(verdicts, spec, index, auth, now))
                   or _plan(store, auth, spec, renew_before_days, force, now, reports.get(spec.name), holders, index)
                   for spec in specs]
        plans = [p for p in planned if p.refused is None]
        for p in plans:
            p.warnings += sweep.get(p.spec.name, [])
        issuing = [p for p in plans if p.reasons]
        if issuing:
            auth.require_usable(now)
            for p in issuing:
                _check_constraints(auth, p.spec)
            backend.refuse_unsupported([p.spec for p in issuing])
        txn = store.transaction()
        befores = [p.cert for p in plans]
        batch = pkcs12.Batch()
        try:
            failed = []
            if check:
                derived = {id(p): _stage_files(store, txn, auth, p, index, True)
                           for p in plans if not p.reasons and p.facts is None}
            else:
                failed, derived = _issue_and_stage(store, txn, auth, backend, plans, index, now, batch)
                keep = [i for i, p in enumerate(plans) if p.error is None]
                plans, befores = [plans[i] for i in keep], [befores[i] for i in keep]
            # built while worker processes (if any) write the files and make the bundles
            done = {id(p): _result(store, p, before, derived.get(id(p), []), check and bool(p.reasons))
                    for p, before in zip(plans, befores)}
            results = [_refused_result(p) if p.refused is not None else done[id(p)]
                       for p in planned if p.error is None]  # a sign error fails the task below
            if check:
                return results
            unsound = _unsound(plans, auth, renew_before_days, now)
            _finish_bundles(store, txn, auth, plans, index, batch)
            written = _written(txn, index)
            # the index alone may have changed too: a certificate on disk it did not know (reconcile)
            if txn.pending or index.changed or store.read(store.index_path) is None:
                txn.write(store.index_path, index.dumps(), KEY_MODE)
                txn.commit()
            _record(verdicts, store, plans, [done[id(p)] for p in plans], index, written, renew_before_days, unsound)
            if failed:  # what was signed is kept (a re-run deploys it); nothing reached any host yet
                raise PkiError(f"{len(failed)} of {len(issuing)} certificate(s) not issued: "
                               + "; ".join(f"{p.spec.name}: {p.error}" for p in failed), failed[0].error.code)
            return results
        except BaseException:
            try:
                batch.close()  # first: no writer may make a temp file once abort removed them
            finally:
                txn.abort()
            raise
        finally:
            store.digests = None
            batch.close()


def _issue_and_stage(store, txn, auth, backend, plans, index, now, batch):
    """Issue what must be, stage every file that changes and start ``batch``'s writers; returns (the plans the
    backend did not sign, {id(plan): the derived files it changed}). With many leaves to write, in chunks: a
    chunk's temp files and bundles are written by a forked writer while the next chunk is signed and staged."""
    for p in plans:
        if p.facts is None:
            if not p.reasons:
                issuance.reconcile(index, "leaf", p.spec.name, auth.name, p.cert, p.spec.profile)
            p.bundle_change = _bundle_change(store, p, index, bool(p.reasons), auth)
    bundles = sum(1 for p in plans if p.bundle_change and _store_bundle(p.spec) and p.spec.pkcs12.password)
    n = pkcs12.workers(bundles, 5 * sum(1 for p in plans if p.reasons))
    failed, derived = [], {}
    for chunk in _chunks(plans, n) if n > 1 else [plans]:
        signing = [p for p in chunk if p.reasons]
        if signing:
            keeper = _Keep(txn, signing, auth)
            try:
                failed += _issue(signing, auth, backend, index, now, keeper)
            finally:
                keeper.wait()
        chunk = [p for p in chunk if p.error is None]
        derived.update((id(p), _stage_files(store, txn, auth, p, index, False)) for p in chunk if p.facts is None)
        if n > 1:
            _start_writing(store, txn, auth, chunk, index, batch, 1)
    if n == 1:  # little to sign, but maybe much to write (e.g. every leaf's chain after its CA's renewal)
        n = pkcs12.workers(bundles, len(txn.pending))
        if n > 1:
            _start_writing(store, txn, auth, [p for p in plans if p.error is None], index, batch, n)
    return failed, derived


def _chunks(plans, processes):
    """``plans`` in consecutive parts with about as many leaves to sign or bundle each: 4 per writer process, or
    fewer for less work (64+ leaves each, as a chunk costs a fork and a batch of signing), but the first with half
    as many: the first writer starts sooner."""
    busy = sum(1 for p in plans if p.reasons or p.bundle_change)
    size = max(1, -(-busy // max(2, min(4 * processes, busy // (4 * pkcs12.PARALLEL_MIN)))))
    chunk, count, out, limit = [], 0, [], max(1, size // 2)
    for p in plans:
        chunk.append(p)
        count += bool(p.reasons or p.bundle_change)
        if count == limit:
            out.append(chunk)
            chunk, count, limit = [], 0, size
    return out + [chunk] if chunk else out


@contextlib.contextmanager
def _cyclic_gc_paused():
    """A run makes objects by the hundred thousand and frees them by reference counting; the cyclic collector
    would only walk the host process's heap again and again (0.1 s at 1,000 leaves in Ansible's worker) and copy
    the pages the forked writers share. It is paused for the run (as ``gc.disable``), then left as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _recorded(verdicts, spec, index, auth, now):
    """A Plan for a leaf up to date by its recorded verdict (``verdicts.Verdicts.hit``) and what is checked on
    every run: not forced, its bundle's password the one in the index's settings HMAC, its serial in the index."""
    if spec.key_location != "controller" or spec.force:
        return None
    meta = index.bundles.get(spec.name)
    if _store_bundle(spec) is not None and not (
            isinstance(meta, dict) and isinstance(meta.get("salt"), str)
            and meta.get("settings") == _settings_digest(spec.pkcs12, meta["salt"])):
        return None
    facts = verdicts.hit(spec, meta, now)
    if facts is None or not index.has_serial(auth.name, facts["serial"]):
        return None
    return Plan(spec, facts=facts)


def _written(txn, index):
    """{path: SHA-256 hex (ABSENT: removed)} of what the transaction is about to commit."""
    out = {}
    for path, (data, _mode) in txn.pending.items():
        if data is store_mod.EXTERNAL:  # a bundle written by a worker: its digest is in the index
            meta = index.bundles.get(os.path.basename(os.path.dirname(path)))
            out[path] = meta.get("sha256") if meta else store_mod.CHANGED
        else:
            out[path] = store_mod.ABSENT if data is None else hashlib.sha256(data).hexdigest()
    return out


def _unsound(plans, auth, renew_before_days, now):
    """The ids of the controller-key leaves issued in this run that a re-run's full check would issue again:
    their verdict is never recorded (``_record``). Checked while the writers run."""
    return {id(p) for p in plans
            if p.reasons and p.facts is None and p.spec.key_location == "controller" and p.key is not None
            and (renewal.key_changed(p.spec.key, p.key)
                 or _reasons(p.spec, p.cert, p.key.public_key(), auth, renew_before_days, False, now))}


def _record(verdicts, store, plans, results, index, written, renew_before_days, unsound):
    """Record the verdict of every controller-key leaf the full check found (or this run made) up to date: what
    the store now holds for it is what was read or written in this run, and a full check of it finds nothing
    (for a leaf issued in this run, ``_unsound``; for the others, the check of this run found no reason)."""
    for p, result in zip(plans, results):
        spec = p.spec
        if (p.facts is not None or spec.key_location != "controller" or p.cert is None or p.key is None
                or id(p) in unsound):
            continue
        hashes = {}
        for f in store_mod.LEAF_FILES:
            path = store.leaf_path(spec.name, f)
            hashes[f] = written.get(path) or store.digests.get(path)
            if hashes[f] is None and f == "bundle.p12" and not os.path.lexists(path):  # checked by exists()
                hashes[f] = store_mod.ABSENT
        if all(h not in (None, store_mod.CHANGED) for h in hashes.values()):
            window = spec.renew_before_days if spec.renew_before_days is not None else renew_before_days
            verdicts.record(spec, index.bundles.get(spec.name), hashes, result, p.cert.not_valid_after_utc,
                            pem.lifetime_days(p.cert) / 3 if window is None else window)
    verdicts.save()


def _plan(store, auth, spec, renew_before_days, force, now, report, holders, index):
    """The ``Plan`` of one leaf; one whose host report is refused (``HOST_REFUSALS``) carries it in ``refused``."""
    try:
        if isinstance(report, PkiError):
            raise report
        return _plan_one(store, auth, spec, renew_before_days, force, now, report, holders, index)
    except PkiError as e:
        if spec.key_location != "host" or e.code not in HOST_REFUSALS:
            raise
        return Plan(spec, refused=e)


def _plan_one(store, auth, spec, renew_before_days, force, now, report, holders, index):
    p = Plan(spec)
    if spec.key_location == "host":
        _held_on_host(p, store, report, index)
    else:
        _held_in_store(p, store, holders)
    if p.cert is not None:
        p.reasons += _reasons(spec, p.cert, p.public_key, auth, renew_before_days, force, now,
                              rotating=report is not None and report.rotating)
    if p.reasons and spec.key_location == "host" and p.public_key is not None:
        _deploy_stored(p, store, auth, renew_before_days, force, now)
        other = holders.holder(spec.name, p.public_key) if p.reasons else None
        if other is not None:
            raise PkiError(f"the host's key for certificate {spec.name!r} is the key of certificate {other!r} too (a "
                           f"cloned host or a copied key file): it is not certified again; make a new key on that "
                           f"host (mtls_rotate_keys) and run again", "key_reused")
        if p.reasons:
            holders.add(spec.name, p.public_key)  # a second host offering the same key in this run is caught too
    if spec.key_location == "controller" and (
            "key_mismatch" in p.reasons  # never certify a key that may be another leaf's (a copied key file)
            or p.reasons and spec.rotate_key):
        p.new_key = True
    return p


def _held_in_store(p, store, holders):
    """The key and certificate in the store; a missing key or one of another type means a new key."""
    spec = p.spec
    key_path = store.leaf_path(spec.name, "key.pem")
    key_data = store.read(key_path)
    if key_data is not None:
        p.key = keys.from_pem(key_data, key_path)
    p.cert = _stored_cert(p, store)
    if p.key is None:
        p.new_key = True
        if p.cert is not None:
            p.reasons.append("key_missing")
    elif renewal.key_changed(spec.key, p.key):
        p.new_key = True
        p.reasons.append("spec_changed: key_type")
    elif p.cert is None and holders.holder(spec.name, p.key):  # a copied key file
        p.new_key = True
        p.reasons.append("key_reused")
    if p.key is not None and not p.new_key:
        p.public_key = p.key.public_key()


def _stored_cert(p, store):
    cert_path = store.leaf_path(p.spec.name, "cert.pem")
    data = store.read(cert_path)
    if data is None:
        p.reasons.append("missing")
        return None
    try:
        return pem.load_cert(data, cert_path)
    except PkiError:
        p.reasons.append("unreadable")
        return None


def _travelled(what, whose=""):
    return PkiError(f"the host offers the key the control node made for {what} (its key_location was controller): "
                    f"that key has travelled, so it is never certified again{whose}; let mtls.rollout.host_key make "
                    f"a new key on the host (mtls_rotate_keys) and send its CSR", "key_location_changed")


def _held_on_host(p, store, report, index):
    """The host's key (its CSR's public key) and the certificate it holds; never a key from the store, nor one
    that ever was in it (``Index.travelled``)."""
    spec, what = p.spec, f"certificate {p.spec.name!r}"
    if report is None:
        raise PkiError(f"{what} has key_location host but no report from its host: pass the host's csr "
                       f"(and held_certificate) from mtls.rollout.host_key", "no_csr")
    if report.public_key is not None and renewal.key_changed(spec.key, report.public_key):
        raise PkiError(f"the host's key for {what} is {keys.spec_of(report.public_key)} but the inventory asks "
                       f"for {spec.key}: let mtls.rollout.host_key make a key of that type (it does so when "
                       f"key_type changes) and send its CSR", "key_type")
    if report.public_key is not None:
        pushed_for = index.travelled_for(keys.public_der(report.public_key))
        if pushed_for is not None:
            raise _travelled(what, "" if pushed_for == spec.name else f" (it was certificate {pushed_for!r}'s)")
    stored_key = store.read(store.leaf_path(spec.name, "key.pem"))
    if stored_key is not None and report.public_key is not None:
        pushed = keys.from_pem(stored_key, store.leaf_path(spec.name, "key.pem"))
        if keys.public_der(pushed) == keys.public_der(report.public_key):
            raise _travelled(what)
        p.reasons.append("key_location_changed")
    elif stored_key is not None:
        p.reasons.append("key_location_changed")
    p.public_key, p.csr_pem = report.public_key, report.csr_pem
    if report.held_unreadable:
        p.reasons.append("unreadable")
    elif report.held is None:
        p.reasons.append("missing")
    else:
        p.cert = report.held
        if report.public_key is None:  # check mode: the host is about to make its key
            p.reasons.append("key_missing")


def _reasons(spec, cert, public_key, auth, renew_before_days, force, now, rotating=False):
    """Why ``cert``, held for ``spec`` with ``public_key``, must be issued again (empty: it need not)."""
    reasons = []
    if public_key is not None and keys.public_der(public_key) != keys.public_der(cert.public_key()):
        reasons.append("key_rotation" if rotating else "key_mismatch")
    changes = renewal.leaf_changes(spec, cert)
    if changes:
        reasons.append("spec_changed: " + ", ".join(changes))
    if renewal.issuer_changed(cert, auth.cert):
        reasons.append("issuer_changed")
    elif renewal.outlives_issuer(cert, auth.cert):
        reasons.append("outlives_issuer")
    due = renewal.due(cert, spec.renew_before_days if spec.renew_before_days is not None else renew_before_days, now)
    if due:
        reasons.append(due)
    if force or spec.force:
        reasons.append("forced")
    return reasons


def _deploy_stored(p, store, auth, renew_before_days, force, now):
    """A certificate issued for the host's key by an earlier run that never reached the host (its deployment
    failed) is deployed, not issued again: no second serial for the same request without a reason."""
    if "key_location_changed" in p.reasons:
        return
    data = store.read(store.leaf_path(p.spec.name, "cert.pem"))
    try:
        stored = pem.load_cert(data, "") if data is not None else None
    except PkiError:
        return
    if stored is not None and not _reasons(p.spec, stored, p.public_key, auth, renew_before_days, force, now):
        p.cert, p.reasons, p.undeployed = stored, [], True


def _check_constraints(auth, spec):
    for ca in auth.fullchain:
        bad = constraints.violations(ca, spec.dns, spec.ip)
        if bad:
            raise PkiError(f"certificate {spec.name!r}: {', '.join(bad)} not permitted by the name constraints of "
                           f"{ca.subject.rfc4514_string()}; change the names or the CA's name_constraints",
                           "name_constraints")


def _issue(plans, auth, backend, index, now, on_signed=None):
    """Certify every plan through the backend in one batch; returns the plans that failed (``p.error``)."""
    for p in plans:
        if p.new_key:
            p.key = keys.generate(p.spec.key)
            p.public_key = p.key.public_key()
        if issuance.validity(now, p.spec.valid_days, auth.cert)[2]:
            p.warnings.append(issuance.clip_warning(f"certificate {p.spec.name!r}", p.spec.valid_days, auth.name,
                                                    auth.cert))
    signed = backend.sign_many(auth, [SignRequest(p.spec, p.public_key, p.csr_pem, p.key) for p in plans],
                               index, now, on_signed=on_signed)
    failed = []
    for p, cert in zip(plans, signed):
        if isinstance(cert, SignError):
            p.error = cert
            failed.append(p)
            continue
        if isinstance(cert, Signed):
            p.signed, cert = cert, cert.cert
        p.cert = cert
        record = issuance.record("leaf", p.spec.name, auth.name, p.cert, p.spec.profile, "; ".join(p.reasons), now,
                                 signed=p.signed)
        record["key_location"] = p.spec.key_location
        index.add(record)
    return failed


class _Keep:
    """``on_signed`` of a backend's batch: a host key's new certificate goes into the store (``Transaction.place``)
    as soon as it arrives, in the thread that received it, while the others are still being signed. A run that fails
    or is killed later keeps it, and a re-run deploys it instead of signing again (``_deploy_stored``): only the
    requests in flight at that moment are uncertain. Its fullchain.pem, chain.pem and ca.pem follow it the same way
    from a writer thread (so the pool's thread is free for the next request at once, and the cache's file creation
    overlaps the signing instead of following it); a kill in between leaves derived files that a re-run finds out
    of date and rewrites. What could not be placed is staged and written (or its error reported) by the commit as
    usual. ``wait`` (always called) lets the writer finish."""

    def __init__(self, txn, plans, auth):
        self.txn, self.plans = txn, plans
        self.chain, self.root = _issuer_pems(auth)  # built once, before the pool's threads read them
        self.queue, self.writer = queue.SimpleQueue(), None
        self.lock = threading.Lock()

    def __call__(self, i, result):
        p = self.plans[i]
        if not (isinstance(result, Signed) and p.spec.key_location == "host"):
            return
        try:
            self.txn.place(self.txn.store.leaf_path(p.spec.name, "cert.pem"), result.pem)
        except (OSError, PkiError):
            return
        p.placed = ("cert.pem",)
        with self.lock:
            if self.writer is None:
                self.writer = threading.Thread(target=self._write, daemon=True, name="mtls-cache-writer")
                self.writer.start()
        self.queue.put((p, result.pem))

    def _write(self):
        store = self.txn.store
        for p, cert_pem in iter(self.queue.get, None):
            placed = list(p.placed)
            try:
                for f, data in (("fullchain.pem", cert_pem + self.chain), ("chain.pem", self.chain),
                                ("ca.pem", self.root)):
                    path = store.leaf_path(p.spec.name, f)
                    if not (f != "fullchain.pem" and p.cert is not None and store.read(path) == data):
                        self.txn.place(path, data)  # else a renewal: the issuer's files are as they were
                    placed.append(f)
            except (OSError, PkiError):
                pass
            p.placed = tuple(placed)

    def wait(self):
        if self.writer is not None:
            self.queue.put(None)
            self.writer.join()


def _stage_files(store, txn, auth, p, index, check):
    """Stage every file of the leaf whose content must change; returns the names of derived files changed."""
    def path(filename):
        return store.leaf_path(p.spec.name, filename)

    issued = bool(p.reasons) and not check
    cert_pem = p.signed.pem if p.signed is not None else pem.to_pem(p.cert) if p.cert is not None else None
    if issued and "cert.pem" not in p.placed:  # placed: already in the store (_Keep)
        txn.write(path("cert.pem"), cert_pem)
    if issued and p.new_key:
        txn.write(path("key.pem"), keys.to_pem(p.key), KEY_MODE)
    derived = []
    if not issued and p.cert is not None and p.spec.key_location == "host" and store.read(path("cert.pem")) != cert_pem:
        derived.append("cert.pem")  # the store keeps the certificate the host holds (e.g. after a lost file)
        if not check:
            txn.write(path("cert.pem"), cert_pem)
    pushed = store.read(path("key.pem")) if p.spec.key_location == "host" else None
    if pushed is not None:
        derived.append("key.pem")  # key_location_changed: the pushed key leaves the store, remembered as travelled
        if not check:
            index.add_travelled(keys.public_der(keys.from_pem(pushed, path("key.pem"))), p.spec.name)
            txn.remove(path("key.pem"))
    chain, root = _issuer_pems(auth)
    for f, data in (("chain.pem", chain), ("fullchain.pem", cert_pem + chain), ("ca.pem", root)):
        if issued and f in p.placed:
            continue  # in the store as it should be since the certificate arrived (_Keep)
        if store.read(path(f)) != data:
            derived.append(f)
            if not check:
                txn.write(path(f), data)
    bundle = p.bundle_change if not check else _bundle_change(store, p, index, issued, auth)
    if bundle:
        derived.append(bundle)  # staged by ensure_leaves once the batch of bundles is made
    return derived


def _start_writing(store, txn, auth, plans, index, batch, processes):
    """Hand what is staged for ``plans``, and their new bundles, to ``processes`` new writers of ``batch``: forked
    workers make the bundles and write the temp files while the caller goes on. (For a few leaves, nothing is
    handed over: ``_finish_bundles`` makes the bundles here and the commit writes the files.)"""
    jobs = [p for p in plans if p.bundle_change and _store_bundle(p.spec) is not None]
    for p in plans:
        if p.bundle_change and _store_bundle(p.spec) is None:
            _stage_bundle(txn, p, auth, index)
    temps = txn.plan_temps([(store.leaf_path(p.spec.name, "bundle.p12"), KEY_MODE) for p in jobs])
    by_dir = {}
    for path, temp in temps.items():
        if temp[1] is not store_mod.EXTERNAL:
            by_dir.setdefault(os.path.dirname(path), []).append(temp)
    bundling = {id(p) for p in jobs}
    items, owners = [], []
    for p in plans:
        files = by_dir.pop(os.path.dirname(store.leaf_path(p.spec.name, "cert.pem")), [])
        if id(p) in bundling:
            bundle_path = store.leaf_path(p.spec.name, "bundle.p12")
            items.append(((p.spec.pkcs12, p.key, p.cert, auth.intermediates + [auth.root]), temps[bundle_path][0],
                          files))
        elif files:
            items.append((None, None, files))
        else:
            continue
        owners.append(p)
    for files in by_dir.values():
        items.append((None, None, files))
        owners.append(None)
    batch.add(items, owners, processes)


def _finish_bundles(store, txn, auth, plans, index, batch):
    """Stage the bundles that change: wait for the batch's, or make them here (a few leaves)."""
    if not batch.items:
        for p in plans:
            if p.bundle_change:
                data = pkcs12.bundle(p.spec.pkcs12, p.key, p.cert, auth.intermediates + [auth.root]) \
                    if _store_bundle(p.spec) is not None else None
                _stage_bundle(txn, p, auth, index, data=data)
        return
    try:
        digests = batch.get()
    except OSError as e:
        store_mod.raise_write_error(store, e)
        raise
    for p, digest in zip(batch.plans, digests):
        if digest is not None:
            _stage_bundle(txn, p, auth, index, digest=digest)


def _settings_digest(spec, salt):
    settings = json.dumps([spec.password, spec.encryption, spec.friendly_name, spec.include_chain])
    return hmac.new(bytes.fromhex(salt), settings.encode(), hashlib.sha256).hexdigest()


def _bundle_change(store, p, index, issued, auth):
    """'bundle.p12' when the PKCS#12 bundle must be (re)written or removed, else None.

    Rebuilding a bundle costs a key derivation, so it is checked against metadata in the index: the
    certificate (and CA chain) it holds, a salted HMAC of its settings (password included) and the file's hash.
    """
    path = store.leaf_path(p.spec.name, "bundle.p12")
    meta = index.bundles.get(p.spec.name)
    if _store_bundle(p.spec) is None:
        return "bundle.p12" if os.path.exists(path) else None
    data = store.read(path)
    if issued or data is None or not meta:
        return "bundle.p12"
    if (meta.get("cert") != pem.fingerprint(p.cert) or meta.get("sha256") != hashlib.sha256(data).hexdigest()
            or meta.get("settings") != _settings_digest(p.spec.pkcs12, meta.get("salt", ""))
            or (p.spec.pkcs12.include_chain and meta.get("chain") != _chain_digest(auth))):
        return "bundle.p12"
    return None


def _issuer_pems(auth):
    """(chain.pem, ca.pem) of ``auth``'s leaves, made once per run (the same for thousands of leaves)."""
    if getattr(auth, "_leaf_pems", None) is None:
        auth._leaf_pems = (pem.to_pem(*auth.intermediates), pem.to_pem(auth.root))
    return auth._leaf_pems


def _chain_digest(auth):
    return hashlib.sha256(b"".join(_issuer_pems(auth))).hexdigest()


def _store_bundle(spec):
    """The bundle the store makes: none for a host key (the host builds its own from its key)."""
    return spec.pkcs12 if spec.key_location == "controller" else None


def _stage_bundle(txn, p, auth, index, data=None, digest=None):
    """Stage the leaf's bundle (``data``, or already written by a batch worker: its ``digest``) and its metadata
    in the index, or its removal (no bundle in the store for the spec)."""
    path = txn.store.leaf_path(p.spec.name, "bundle.p12")
    if _store_bundle(p.spec) is None:
        txn.remove(path)
        index.bundles.pop(p.spec.name, None)
        return
    salt = os.urandom(16).hex()
    index.bundles[p.spec.name] = {"cert": pem.fingerprint(p.cert), "chain": _chain_digest(auth),
                                  "sha256": digest or hashlib.sha256(data).hexdigest(),
                                  "salt": salt, "settings": _settings_digest(p.spec.pkcs12, salt),
                                  "encryption": p.spec.pkcs12.encryption}
    if data is not None:
        txn.write(path, data, KEY_MODE)


def _refused_result(p):
    """The result of an item refused alone: it failed, ``msg`` says why; nothing of it was written."""
    spec = p.spec
    return {"name": spec.name, "changed": False, "failed": True, "action": "refused", "msg": str(p.refused),
            "code": p.refused.code, "reasons": [], "reason": "", "profile": spec.profile,
            "key_location": spec.key_location, "warnings": [], "key_rotated": False, "before": None}


def _result(store, p, before, derived, pending_issue):
    spec = p.spec
    if p.facts is not None:
        before = None
    if p.reasons:
        action = "issued" if before is None and "unreadable" not in p.reasons else "renewed"
        reasons = list(p.reasons)
    elif derived or p.undeployed:
        action = "updated"
        reasons = (["issued earlier, not on the host yet"] if p.undeployed else []) + [f"{f} out of date" for f in derived]
    else:
        action, reasons = "unchanged", []
    base = store.leaf_path(spec.name)  # ends in a separator
    paths = {"cert": base + "cert.pem", "key": base + "key.pem", "chain": base + "chain.pem",
             "fullchain": base + "fullchain.pem", "ca": base + "ca.pem"}
    if spec.key_location != "controller":
        del paths["key"]
    if _store_bundle(spec) is not None:
        paths["pkcs12"] = base + "bundle.p12"
    result = {"name": spec.name, "changed": action != "unchanged", "action": action, "reasons": reasons,
              "reason": "; ".join(reasons), "profile": spec.profile, "dns": list(spec.dns),
              "ip": [str(i) for i in spec.ip], "email": list(spec.email), "paths": paths,
              "key_location": spec.key_location, "warnings": p.warnings,
              "key_rotated": bool(p.reasons) and before is not None and (
                  p.new_key or "key_rotation" in p.reasons or "key_location_changed" in p.reasons),
              "before": pem.facts(before) if before is not None else p.facts}
    if p.facts is not None:
        result.update(p.facts)
    elif p.cert is not None and not pending_issue:
        result.update(result["before"] if p.cert is before else
                      p.signed.facts if p.signed is not None and p.cert is p.signed.cert else pem.facts(p.cert))
    return result
