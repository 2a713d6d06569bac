"""Revocation: mark certificates revoked in the index and keep each CA's CRL (``ca/<name>/crl.pem``) current.

A CRL is (re)signed only for a reason, which the result names: ``missing``, ``unreadable``,
``issuer_changed`` (the CA was re-issued or re-keyed), ``content_changed`` (revocations added or dropped),
``expired``, ``not_yet_valid``, ``due: N days left`` (inside the refresh window, by default the last
third of the CRL's validity) or ``forced``. Otherwise nothing is written, so repeated runs change
nothing, and runs more frequent than two thirds of ``valid_days`` keep the CRLs from ever expiring.

The CRL number increases with every signing; the last number is also kept on the CA's index record
(``crl_number``), so a lost ``crl.pem`` never makes it go back.
"""

import datetime as dt
import os

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import build, pem
from .authority import Authority
from .errors import PkiError
from .issuance import BACKDATE
from .store import KEY_MODE, PUBLIC_MODE

DEFAULT_VALID_DAYS = 7
REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
           "cessation_of_operation", "privilege_withdrawn")  # names of x509.ReasonFlags members


def _reason_flag(reason):
    """The x509.ReasonFlags of a REASONS name (looked up on use: cryptography may be absent at import time);
    None for unspecified (RFC 5280 5.3.1: the reason code extension is then left out) and unknown names."""
    return getattr(x509.ReasonFlags, reason) if reason in REASONS and reason != "unspecified" else None


def normalise_serial(text):
    """A serial as the index writes it: lower-case hex, no separators, no leading zeros."""
    raw = str(text).strip().lower().replace(":", "").replace(" ", "")
    if raw.startswith("0x"):
        raw = raw[2:]
    try:
        return format(int(raw, 16), "x")
    except ValueError:
        raise PkiError(f"invalid serial {text!r}: give it in hex, e.g. '3f1a...' or '3F:1A:...'") from None


def revoke(store, names=(), serials=(), reason="unspecified", cas=(), include_parents=False, passphrases=None,
           valid_days=DEFAULT_VALID_DAYS, refresh_before_days=None, force=False, check=False, now=None):
    """Revoke by name and/or serial, then make the CRL of every CA concerned current.

    The CRLs written are those of ``cas``, of the issuers of the certificates named, and with
    ``include_parents`` of every CA above them. ``passphrases`` maps a CA name to its key's passphrase
    (``None`` key: the default for all). Returns {changed, revoked, crls, crl_files}.
    """
    now = now or pem.utcnow()
    if reason not in REASONS:
        raise PkiError(f"unknown revocation reason {reason!r}: valid reasons are {', '.join(REASONS)}")
    if not valid_days or valid_days <= 0:
        raise PkiError(f"valid_days must be positive (got {valid_days!r})")
    with store.lock(create=not check):
        index = store.load_index()
        targets = _targets(store, index, names, serials, now)
        revoked = []
        for rec, asked in targets:
            entry = {"name": rec["name"], "kind": rec["kind"], "serial": rec["serial"], "issuer": rec["issuer"],
                     "subject": rec.get("subject"), "not_after": rec.get("not_after"), "requested": asked}
            if rec.get("status") == "revoked":
                entry.update(action="already_revoked", revoked_at=rec.get("revoked_at"),
                             reason=rec.get("revocation_reason") or "unspecified")
            else:
                entry.update(action="revoked", revoked_at=pem.iso(now), reason=reason)
                if not check:
                    rec.update(status="revoked", revoked_at=pem.iso(now), revocation_reason=reason)
            revoked.append(entry)
        if check:  # what the CRLs would hold: the records as they would be after revoking
            for rec, _asked in targets:
                if rec.get("status") != "revoked":
                    rec = dict(rec, status="revoked", revoked_at=pem.iso(now), revocation_reason=reason)
                    index.records = [rec if _same(r, rec) else r for r in index.records]
        wanted = _ordered(list(cas) + [e["issuer"] for e in revoked])
        ca_names = chain_names(store, wanted) if include_parents else wanted
        txn = store.transaction()
        crls = [_ensure_crl(store, txn, index, name, _passphrase(passphrases, name), valid_days,
                            refresh_before_days, force, check, now) for name in ca_names]
        changed = any(e["action"] == "revoked" for e in revoked) or any(c["changed"] for c in crls)
        if changed and not check:
            txn.write(store.index_path, index.dumps(), KEY_MODE)
            txn.commit()
        return {"changed": changed, "revoked": revoked, "crls": crls,
                "crl_files": [c["path"] for c in crls]}


def check(store, cas, include_parents=False, now=None):
    """Read-only: is there a current CRL, signed by the CA as it is now, for each CA (and those above)?

    Returns {crls, crl_files, problems, warnings}; ``problems`` holds {code, ca, message} for each CRL that
    is missing, unreadable, not signed by its CA's current key, expired or not yet valid, or that lacks a
    revocation recorded in the index; ``warnings`` names CRLs inside their refresh window (still valid).
    """
    now = now or pem.utcnow()
    index = store.load_index()
    names = chain_names(store, _ordered(cas)) if include_parents else _ordered(cas)
    crls, problems, warnings = [], [], []
    for name in names:
        auth = Authority(store, name)
        path = store.ca_path(name, "crl.pem")
        current, reason = _read_crl(store, path)
        info = {"ca": name, "path": path}
        if current is None:
            problems.append({"code": reason, "ca": name, "message": f"CA {name!r} has no {'readable ' if reason == 'unreadable' else ''}"
                             f"CRL ({path}): run the pki role with mtls_crl on (site.yml, renew.yml) or revoke.yml"})
        else:
            info.update(_crl_facts(current, now))
            for code, message in _staleness(current, auth, _wanted_entries(index, name, now), now):
                if code == "due":  # still valid: publishable, but the pki role should sign it again soon
                    warnings.append(f"the CRL of CA {name!r} is {message}: run the pki role with mtls_crl on "
                                    f"(site.yml, renew.yml) to sign it again before it expires")
                    continue
                problems.append({"code": code, "ca": name, "message": f"the CRL of CA {name!r} ({path}) {message}"})
        crls.append(info)
    return {"crls": crls, "crl_files": [c["path"] for c in crls], "problems": problems, "warnings": warnings}


def chain_names(store, names):
    """``names`` and, after each, the store names of every CA above it up to the root (no repeats)."""
    by_der = {}
    base = os.path.join(store.root, "ca")
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        data = store.read(store.ca_path(name, "cert.pem"))
        if data is not None:
            by_der.setdefault(pem.load_cert(data, store.ca_path(name, "cert.pem")).public_bytes(
                serialization.Encoding.DER), name)
    out = []
    for name in names:
        out.append(name)
        for cert in Authority(store, name).above:
            above = by_der.get(cert.public_bytes(serialization.Encoding.DER))
            if above is None:
                raise PkiError(f"the CA above {name!r} ({cert.subject.rfc4514_string()}) is not in the store "
                               f"{store.root}: its CRL cannot be written", "no_issuer")
            out.append(above)
    return _ordered(out)


def _ordered(items):
    return list(dict.fromkeys(i for i in items if i))


def _same(a, b):
    return a["issuer"] == b["issuer"] and a["serial"] == b["serial"]


def _passphrase(passphrases, name):
    passphrases = passphrases or {}
    return passphrases.get(name) or passphrases.get(None) or None


def _targets(store, index, names, serials, now):
    """[(index record, what was asked for)] for every certificate to revoke, in request order."""
    found = []
    for name in names or ():
        records = [r for r in index.records if r["name"] == name and r["kind"] in ("leaf", "ca")]
        if not records:
            known = sorted({r["name"] for r in index.records if r["kind"] == "leaf"})
            raise PkiError(f"no certificate named {name!r} in the index of {store.root}"
                           + (f" (known: {', '.join(known)})" if known else ""), "unknown_certificate")
        kinds = {r["kind"] for r in records}
        if len(kinds) > 1:
            raise PkiError(f"{name!r} names both a CA and a leaf certificate: revoke by serial instead",
                           "ambiguous")
        if any(r["kind"] == "ca" and r["issuer"] == r["name"] for r in records):
            raise PkiError(f"{name!r} is a self-signed root CA: a root cannot be revoked by a CRL; remove it from "
                           f"every trust store and build a new hierarchy", "root")
        # every certificate of that name that still verifies: the current one and any superseded
        # (renewed) one that has not expired yet, since whoever holds it could still use it
        live = [r for r in records if r.get("status") == "revoked" or _parse(r["not_after"]) > now]
        found += [(r, f"name {name}") for r in live]
    for text in serials or ():
        serial = normalise_serial(text)
        records = [r for r in index.records if r["serial"] == serial]
        if not records:
            raise PkiError(f"serial {serial} is not in the index of {store.root}: only certificates issued from "
                           f"this store can be revoked here", "unknown_certificate")
        if len(records) > 1:
            raise PkiError(f"serial {serial} was issued by more than one CA "
                           f"({', '.join(r['issuer'] for r in records)}): revoke by name instead", "ambiguous")
        if records[0]["kind"] == "ca" and records[0]["issuer"] == records[0]["name"]:
            raise PkiError(f"serial {serial} is the self-signed root CA {records[0]['name']!r}: a root cannot be "
                           f"revoked by a CRL", "root")
        found.append((records[0], f"serial {serial}"))
    unique = {}
    for rec, asked in found:
        unique.setdefault((rec["issuer"], rec["serial"]), (rec, asked))
    return list(unique.values())


def _parse(iso_text):
    return dt.datetime.strptime(iso_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _wanted_entries(index, ca_name, now):
    """{serial int: (revocation date, reason flag)} the CA's CRL must list: its revoked, unexpired certificates."""
    out = {}
    for r in index.records:
        if r["issuer"] != ca_name or r.get("status") != "revoked" or r["name"] == ca_name and r["kind"] == "ca":
            continue
        if _parse(r["not_after"]) <= now:
            continue  # RFC 5280 3.3: an expired certificate may leave the CRL
        # a record marked revoked by other means may lack the time: a stable stand-in keeps runs idempotent
        when = r.get("revoked_at") or r.get("issued_at") or r["not_before"]
        out[int(r["serial"], 16)] = (_parse(when), _reason_flag(r.get("revocation_reason") or "unspecified"))
    return out


def _entries_of(crl):
    out = {}
    for entry in crl:
        try:
            flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            flag = None
        out[entry.serial_number] = (entry.revocation_date_utc.replace(microsecond=0), flag)
    return out


def _read_crl(store, path):
    data = store.read(path)
    if data is None:
        return None, "missing"
    try:
        return x509.load_pem_x509_crl(data), None
    except ValueError:
        return None, "unreadable"


def crl_number(crl):
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _signed_by(crl, auth):
    if crl.issuer != auth.cert.subject:
        return False
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    if aki is not None and pem.ski(auth.cert) is not None and aki != pem.ski(auth.cert):
        return False
    try:
        return crl.is_signature_valid(auth.cert.public_key())
    except (TypeError, ValueError):
        return False


def _staleness(crl, auth, wanted, now, refresh_before_days=None):
    """[(code, sentence)] of what makes ``crl`` unfit, strictest first; empty when it is current."""
    found = []
    if not _signed_by(crl, auth):
        found.append(("issuer_changed", "is not signed by the CA's current certificate and key (the CA was "
                                        "re-issued or re-keyed): sign it again"))
    have = _entries_of(crl)
    added = sorted(set(wanted) - set(have))
    dropped = sorted(set(have) - set(wanted))
    differs = [s for s in set(wanted) & set(have) if have[s] != (wanted[s][0].replace(microsecond=0), wanted[s][1])]
    if added or dropped or differs:
        parts = ([f"{len(added)} revocation(s) missing ({', '.join(format(s, 'x') for s in added)})"] if added else []) + \
                ([f"{len(dropped)} entr(ies) no longer wanted"] if dropped else []) + \
                ([f"{len(differs)} entr(ies) with another date or reason"] if differs else [])
        found.append(("content_changed", "is out of date: " + ", ".join(parts)))
    next_update = crl.next_update_utc
    if next_update is None:
        found.append(("no_next_update", "has no nextUpdate"))
    elif next_update <= now:
        found.append(("expired", f"expired on {pem.iso(next_update)}: nginx rejects every client with "
                                 f"'CRL has expired' (error 12) until it is refreshed"))
    elif crl.last_update_utc > now:
        found.append(("not_yet_valid", f"is not valid before {pem.iso(crl.last_update_utc)}: check the clocks"))
    else:
        lifetime = (next_update - crl.last_update_utc).total_seconds() / 86400
        window = lifetime / 3 if refresh_before_days is None else refresh_before_days
        left = (next_update - now).total_seconds() / 86400
        if left <= window:
            found.append(("due", f"due: {left:.0f} days left" if left >= 2 else f"due: {left * 24:.0f} hours left"))
    return found


def _crl_facts(crl, now):
    next_update = crl.next_update_utc
    return {"number": crl_number(crl), "this_update": pem.iso(crl.last_update_utc),
            "next_update": pem.iso(next_update) if next_update else None,
            "days_remaining": round((next_update - now).total_seconds() / 86400, 2) if next_update else None,
            "revoked_count": len(crl)}


def _last_number(index, name):
    return max([r.get("crl_number") or 0 for r in index.records if r["kind"] == "ca" and r["name"] == name] or [0])


def _ensure_crl(store, txn, index, name, passphrase, valid_days, refresh_before_days, force, check, now):
    auth = Authority(store, name, passphrase)
    path = store.ca_path(name, "crl.pem")
    current, unreadable = _read_crl(store, path)
    wanted = _wanted_entries(index, name, now)
    if current is None:
        reasons = [unreadable]
    else:
        reasons = [code if code != "due" else message
                   for code, message in _staleness(current, auth, wanted, now, refresh_before_days)]
        if force:
            reasons.append("forced")
    result = {"ca": name, "path": path, "changed": bool(reasons), "reasons": reasons, "reason": "; ".join(reasons),
              "action": "unchanged" if not reasons else ("issued" if current is None else "refreshed")}
    if current is not None:
        result["before"] = _crl_facts(current, now)
    if not reasons:
        result.update(_crl_facts(current, now))
        return result
    if check:
        result["revoked_count"] = len(wanted)
        return result
    number = max(crl_number(current) if current is not None else 0, _last_number(index, name)) + 1
    builder = (x509.CertificateRevocationListBuilder().issuer_name(auth.cert.subject)
               .last_update(now - BACKDATE).next_update((now + dt.timedelta(days=valid_days)).replace(microsecond=0))
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(_aki(auth.cert), critical=False))
    for serial, (when, flag) in sorted(wanted.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if flag is not None:
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(auth.key, build.signature_hash(auth.key))
    txn.write(path, crl.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    for rec in index.records:  # the number survives a lost crl.pem
        if rec["kind"] == "ca" and rec["name"] == name and rec.get("status") == "valid":
            rec["crl_number"] = number
    result.update(_crl_facts(crl, now))
    return result


def _aki(ca_cert):
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
