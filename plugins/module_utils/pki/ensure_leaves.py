"""Ensure a list of leaf certificates from one issuing CA in one pass under one lock."""

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field

from . import build, constraints, issuance, key_reuse, keys, pem, pkcs12, renewal, specs as specs_mod
from .authority import Authority
from .errors import PkiError
from .store import KEY_MODE


@dataclass
class Plan:
    """What one leaf needs; filled in by ``_plan``, carried out by ``_issue``."""
    spec: object
    cert: object = None  # on disk now
    key: object = None
    reasons: list = field(default_factory=list)
    new_key: bool = False
    warnings: list = field(default_factory=list)
    bundle_change: object = None  # 'bundle.p12' when the bundle is (re)written or removed
    bundle_data: bytes = None  # the new bundle, from the batch _start_bundles began


def ensure_leaves(store, issuer_name, specs, issuer_passphrase=None, renew_before_days=None, force=False,
                  check=False, now=None):
    """Issue, renew or leave alone every spec in ``specs``; returns one result dict per spec, in order."""
    now = now or pem.utcnow()
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise PkiError(f"certificate name {spec.name!r} appears twice in the list: names must be unique")
        seen.add(spec.name)
    sweep = specs_mod.task_window_warnings(specs, renew_before_days)
    with store.lock(create=not check):
        index = store.load_index()
        try:
            auth = Authority(store, issuer_name, issuer_passphrase)
        except PkiError as e:  # check mode previews a first run, whose issuer an earlier task would create
            if not (check and e.code == "no_issuer"
                    and all(store.read(store.leaf_path(s.name, "cert.pem")) is None for s in specs)):
                raise
            return [dict(_result(store, Plan(s, reasons=["missing"], new_key=True), None, [], True),
                         warnings=[f"check mode: issuer {issuer_name!r} does not exist yet ({e})"]) for s in specs]
        plans = [_plan(store, auth, spec, renew_before_days, force, now) for spec in specs]
        for p in plans:
            p.warnings += sweep.get(p.spec.name, [])
        issuing = [p for p in plans if p.reasons]
        if issuing:
            auth.require_usable(now)
            for p in issuing:
                _check_constraints(auth, p.spec)
        txn = store.transaction()
        befores = [p.cert for p in plans]
        batch = None
        try:
            if not check:
                for p in plans:
                    if p.reasons:
                        _issue(p, auth, index, now)
                    else:
                        issuance.reconcile(index, "leaf", p.spec.name, auth.name, p.cert, p.spec.profile)
                batch = _start_bundles(store, auth, plans, index)
            results = []
            for p, before in zip(plans, befores):
                pending = check and bool(p.reasons)
                derived = [] if pending else _stage_files(store, txn, auth, p, index, check)
                results.append(_result(store, p, before, derived, pending))
            if check:
                return results
            if batch.parallel:
                txn.prepare()  # write the other files while worker processes make the bundles
            for p, data in zip(batch.plans, batch.get()):
                p.bundle_data = data
            for p in plans:
                if p.bundle_change:
                    _stage_bundle(txn, store.leaf_path(p.spec.name, "bundle.p12"), p, auth, index)
            # the index alone may have changed too: a certificate on disk it did not know (reconcile)
            if txn.pending or store.read(store.index_path) != index.dumps():
                txn.write(store.index_path, index.dumps(), KEY_MODE)
                txn.commit()
            return results
        except BaseException:
            txn.abort()
            raise
        finally:
            if batch is not None:
                batch.close()


def _plan(store, auth, spec, renew_before_days, force, now):
    p = Plan(spec)
    cert_path, key_path = store.leaf_path(spec.name, "cert.pem"), store.leaf_path(spec.name, "key.pem")
    key_data = store.read(key_path)
    if key_data is not None:
        p.key = keys.from_pem(key_data, key_path)
    cert_data = store.read(cert_path)
    if cert_data is not None:
        try:
            p.cert = pem.load_cert(cert_data, cert_path)
        except PkiError:
            p.reasons.append("unreadable")
    elif not p.reasons:
        p.reasons.append("missing")
    if p.key is None:
        p.new_key = True
        if p.cert is not None:
            p.reasons.append("key_missing")
    elif renewal.key_changed(spec.key, p.key):
        p.new_key = True
        p.reasons.append("spec_changed: key_type")
    elif p.cert is None and key_reuse.holder(store, spec.name, p.key):  # a copied key file
        p.new_key = True
        p.reasons.append("key_reused")
    if p.cert is not None:
        if p.key is not None and not p.new_key and keys.public_der(p.key) != keys.public_der(p.cert.public_key()):
            p.reasons.append("key_mismatch")
            p.new_key = True  # never certify a key that may be another leaf's (a copied key file)
        changes = renewal.leaf_changes(spec, p.cert)
        if changes:
            p.reasons.append("spec_changed: " + ", ".join(changes))
        if renewal.issuer_changed(p.cert, auth.cert):
            p.reasons.append("issuer_changed")
        elif renewal.outlives_issuer(p.cert, auth.cert):
            p.reasons.append("outlives_issuer")
        due = renewal.due(p.cert, spec.renew_before_days if spec.renew_before_days is not None
                          else renew_before_days, now)
        if due:
            p.reasons.append(due)
        if force or spec.force:
            p.reasons.append("forced")
    if p.reasons and spec.rotate_key:
        p.new_key = True
    return p


def _check_constraints(auth, spec):
    for ca in auth.fullchain:
        bad = constraints.violations(ca, spec.dns, spec.ip)
        if bad:
            raise PkiError(f"certificate {spec.name!r}: {', '.join(bad)} not permitted by the name constraints of "
                           f"{ca.subject.rfc4514_string()}; change the names or the CA's name_constraints",
                           "name_constraints")


def _issue(p, auth, index, now):
    if p.new_key:
        p.key = keys.generate(p.spec.key)
    not_before, not_after, clipped = issuance.validity(now, p.spec.valid_days, auth.cert)
    if clipped:
        p.warnings.append(issuance.clip_warning(f"certificate {p.spec.name!r}", p.spec.valid_days, auth.name,
                                                auth.cert))
    p.cert = build.leaf_certificate(p.spec, p.key.public_key(), auth.cert, auth.key,
                                    issuance.serial(index, auth.name), not_before, not_after)
    index.add(issuance.record("leaf", p.spec.name, auth.name, p.cert, p.spec.profile, "; ".join(p.reasons), now))


def _stage_files(store, txn, auth, p, index, check):
    """Stage every file of the leaf whose content must change; returns the names of derived files changed."""
    def path(filename):
        return store.leaf_path(p.spec.name, filename)

    issued = bool(p.reasons) and not check
    if issued:
        txn.write(path("cert.pem"), pem.to_pem(p.cert))
        if p.new_key:
            txn.write(path("key.pem"), keys.to_pem(p.key), KEY_MODE)
    derived = []
    for f, data in (("chain.pem", pem.to_pem(*auth.intermediates)),
                    ("fullchain.pem", pem.to_pem(p.cert, *auth.intermediates)), ("ca.pem", pem.to_pem(auth.root))):
        if store.read(path(f)) != data:
            derived.append(f)
            if not check:
                txn.write(path(f), data)
    bundle = p.bundle_change if not check else _bundle_change(store, p, index, issued, auth)
    if bundle:
        derived.append(bundle)  # staged by ensure_leaves once the batch of bundles is made
    return derived


def _start_bundles(store, auth, plans, index):
    """Decide which bundles change and start serializing the new ones as one batch (in worker processes
    when there are many); returns the pkcs12.Batch, with ``plans`` the plans it makes bundles for."""
    jobs = []
    for p in plans:
        p.bundle_change = _bundle_change(store, p, index, bool(p.reasons), auth)
        if p.bundle_change and p.spec.pkcs12 is not None:
            jobs.append(p)
    batch = pkcs12.Batch([(p.spec.pkcs12, p.key, p.cert, auth.intermediates + [auth.root]) for p in jobs])
    batch.plans = jobs
    return batch


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
    if p.spec.pkcs12 is None:
        return "bundle.p12" if os.path.exists(path) else None
    data = store.read(path)
    if issued or data is None or not meta:
        return "bundle.p12"
    if (meta.get("cert") != pem.fingerprint(p.cert) or meta.get("sha256") != hashlib.sha256(data).hexdigest()
            or meta.get("settings") != _settings_digest(p.spec.pkcs12, meta.get("salt", ""))
            or (p.spec.pkcs12.include_chain and meta.get("chain") != _chain_digest(auth))):
        return "bundle.p12"
    return None


def _chain_digest(auth):
    return hashlib.sha256(pem.to_pem(*auth.intermediates, auth.root)).hexdigest()


def _stage_bundle(txn, path, p, auth, index):
    if p.spec.pkcs12 is None:
        txn.remove(path)
        index.bundles.pop(p.spec.name, None)
        return
    data = p.bundle_data
    salt = os.urandom(16).hex()
    index.bundles[p.spec.name] = {"cert": pem.fingerprint(p.cert), "chain": _chain_digest(auth),
                                  "sha256": hashlib.sha256(data).hexdigest(),
                                  "salt": salt, "settings": _settings_digest(p.spec.pkcs12, salt),
                                  "encryption": p.spec.pkcs12.encryption}
    txn.write(path, data, KEY_MODE)


def _result(store, p, before, derived, pending_issue):
    spec = p.spec
    if p.reasons:
        action = "issued" if before is None and "unreadable" not in p.reasons else "renewed"
        reasons = list(p.reasons)
    elif derived:
        action, reasons = "updated", [f"{f} out of date" for f in derived]
    else:
        action, reasons = "unchanged", []
    paths = {f.split(".", maxsplit=1)[0]: store.leaf_path(spec.name, f)
             for f in ("cert.pem", "key.pem", "chain.pem", "fullchain.pem", "ca.pem")}
    if spec.pkcs12 is not None:
        paths["pkcs12"] = store.leaf_path(spec.name, "bundle.p12")
    result = {"name": spec.name, "changed": action != "unchanged", "action": action, "reasons": reasons,
              "reason": "; ".join(reasons), "profile": spec.profile, "dns": list(spec.dns),
              "ip": [str(i) for i in spec.ip], "email": list(spec.email), "paths": paths,
              "key_rotated": bool(p.reasons) and p.new_key and before is not None, "warnings": p.warnings,
              "before": pem.facts(before) if before is not None else None}
    if p.cert is not None and not pending_issue:
        result.update(pem.facts(p.cert))
    return result
