"""Ensure one CA (root or intermediate) in the store: issue, renew, or leave it alone."""

from . import build, issuance, keys, pem, renewal
from .authority import Authority
from .errors import PkiError
from .store import KEY_MODE


def ensure_ca(store, spec, passphrase=None, issuer_passphrase=None, force=False, check=False, now=None):
    """Returns a result dict: action (issued/renewed/updated/unchanged), reasons, facts, paths."""
    now = now or pem.utcnow()
    with store.lock(create=not check):
        index = store.load_index()
        cert_path, key_path = store.ca_path(spec.name, "cert.pem"), store.ca_path(spec.name, "key.pem")
        try:
            issuer = Authority(store, spec.issuer, issuer_passphrase) if spec.issuer else None
        except PkiError as e:  # check mode previews a first run, whose issuer an earlier task would create
            if not (check and e.code == "no_issuer" and store.read(cert_path) is None):
                raise
            return dict(_result(spec, store, "issued", ["missing"], None, None),
                        warnings=[f"check mode: issuer {spec.issuer!r} does not exist yet ({e})"])
        cert_data, key_data = store.read(cert_path), store.read(key_path)
        cert = pem.load_cert(cert_data, cert_path) if cert_data is not None else None
        key = keys.from_pem(key_data, key_path, passphrase) if key_data is not None else None
        if cert is not None and key is None:
            raise PkiError(f"CA {spec.name!r} has a certificate but its key {key_path} is missing: restore the key "
                           f"from a backup, or remove {store.ca_path(spec.name)} to create a new CA (everything it "
                           f"issued will then stop verifying)", "no_key")
        if cert is not None and not pem.is_ca(cert):
            raise PkiError(f"{cert_path} is not a CA certificate (no basicConstraints CA:TRUE)", "not_a_ca")

        reasons = _reasons(spec, cert, key, issuer, force, now)
        new_key = key is None or renewal.key_changed(spec.key, key) or (bool(reasons) and spec.rotate_key)
        encrypt_key = key is not None and not new_key and bool(passphrase) and not keys.is_encrypted(key_data)
        warnings = []
        if reasons and issuer is not None:
            issuer.require_usable(now)
            if issuer.path_length == 0:
                raise PkiError(f"issuer {issuer.name!r} has path_length 0: it may issue only leaf certificates, "
                               f"not CA {spec.name!r}", "path_length")
            if spec.path_length is not None and issuer.path_length is not None and spec.path_length >= issuer.path_length:
                raise PkiError(f"path_length {spec.path_length} of CA {spec.name!r} must be below its issuer "
                               f"{issuer.name!r}'s path_length {issuer.path_length}", "path_length")
        if check:
            action = _action(cert, reasons, changed=bool(reasons) or encrypt_key)
            return _result(spec, store, action, reasons or (["key_encrypted"] if encrypt_key else []),
                           None if reasons else cert, before=cert)

        txn, before = store.transaction(), cert
        if reasons:
            if new_key:
                key = keys.generate(spec.key)
            not_before, not_after, clipped = issuance.validity(now, spec.valid_days, issuer.cert if issuer else None)
            if clipped:
                warnings.append(issuance.clip_warning(f"CA {spec.name!r}", spec.valid_days, issuer.name, issuer.cert))
            cert = build.ca_certificate(spec, key.public_key(), issuer.cert if issuer else None,
                                        issuer.key if issuer else key,
                                        issuance.serial(index, spec.issuer or spec.name), not_before, not_after)
            index.add(issuance.record("ca", spec.name, spec.issuer or spec.name, cert, reason="; ".join(reasons),
                                      now=now))
            txn.write(cert_path, pem.to_pem(cert))
        else:
            issuance.reconcile(index, "ca", spec.name, spec.issuer or spec.name, cert)
        if new_key or encrypt_key:
            txn.write(key_path, keys.to_pem(key, passphrase), KEY_MODE)
        above = issuer.fullchain if issuer else []
        if above:
            txn.changed(store.ca_path(spec.name, "chain.pem"), pem.to_pem(*above))
        txn.changed(store.ca_path(spec.name, "fullchain.pem"), pem.to_pem(cert, *above))
        changed = bool(txn.pending)
        if changed or store.read(store.index_path) != index.dumps():  # or only the index (reconcile)
            txn.write(store.index_path, index.dumps(), KEY_MODE)
            txn.commit()
        if not reasons and changed:
            reasons = ["key_encrypted"] if encrypt_key else ["chain_updated"]
        result = _result(spec, store, _action(before, reasons, changed), reasons, cert, before)
        result["warnings"] = warnings
        return result


def _action(before, reasons, changed):
    if not changed:
        return "unchanged"
    if before is None:
        return "issued"
    return "renewed" if reasons and reasons[0] not in ("key_encrypted", "chain_updated") else "updated"


def _reasons(spec, cert, key, issuer, force, now):
    if cert is None:
        return ["missing"]
    reasons = []
    if key is not None and keys.public_der(key) != keys.public_der(cert.public_key()):
        reasons.append("key_mismatch")
    changes = renewal.ca_changes(spec, cert)
    if key is not None and renewal.key_changed(spec.key, key):
        changes.append("key_type")
    if changes:
        reasons.append("spec_changed: " + ", ".join(changes))
    return reasons + renewal.ca_lifecycle_reasons(spec, cert, issuer.cert if issuer else None, force, now)


def _result(spec, store, action, reasons, cert, before):
    """The module result; ``cert`` is None in check mode when a new certificate would be made."""
    paths = {f: store.ca_path(spec.name, f + ".pem") for f in ("cert", "key", "chain", "fullchain", "crl")}
    if spec.issuer is None:
        paths.pop("chain")
    result = {"name": spec.name, "changed": action != "unchanged", "action": action, "reasons": list(reasons),
              "reason": "; ".join(reasons), "issuer_ca": spec.issuer, "is_root": spec.issuer is None, "paths": paths,
              "before": pem.facts(before) if before is not None else None}
    if cert is not None:
        result.update(pem.facts(cert))
    return result
