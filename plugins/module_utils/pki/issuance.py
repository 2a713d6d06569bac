"""What every issuance shares: validity windows, unique serials and index records."""

import datetime as dt

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import pem

BACKDATE = dt.timedelta(minutes=5)  # tolerate clients whose clocks run a little behind


def validity(now, valid_days, issuer_cert=None):
    """(not_before, not_after, clipped): a certificate never outlives its issuer, it is clipped to it."""
    not_before = now - BACKDATE
    not_after = now + dt.timedelta(days=valid_days)
    clipped = issuer_cert is not None and not_after > issuer_cert.not_valid_after_utc
    if clipped:
        not_after = issuer_cert.not_valid_after_utc
    return not_before, not_after.replace(microsecond=0), clipped


def clip_warning(what, valid_days, issuer_name, issuer_cert):
    return (f"{what}: valid_days {valid_days:g} would outlive issuer {issuer_name!r}; not_after clipped to the "
            f"issuer's {pem.iso(issuer_cert.not_valid_after_utc)} (renew the issuer to lift this)")


def serial(index, issuer_name):
    """A random positive serial of 159 bits, never reused for the same issuer."""
    while True:
        number = x509.random_serial_number()
        if not index.has_serial(issuer_name, format(number, "x")):
            return number


def record(kind, name, issuer_name, cert, profile=None, reason=None, now=None, signed=None):
    """The index record of ``cert``; ``signed`` (a ``backends.base.Signed`` of it) saves reading it again."""
    if signed is not None:
        facts, names = signed.facts, signed.san
    else:
        facts = {"serial": pem.serial_hex(cert), "fingerprint_sha256": pem.fingerprint(cert),
                 "subject": cert.subject.rfc4514_string(), "not_before": pem.iso(cert.not_valid_before_utc),
                 "not_after": pem.iso(cert.not_valid_after_utc)}
        names = pem.san(cert)
    return {"kind": kind, "name": name, "issuer": issuer_name, "serial": facts["serial"],
            "fingerprint_sha256": facts["fingerprint_sha256"], "subject": facts["subject"],
            "san": sorted(f"{k}:{v}" for k, v in names), "profile": profile,
            "not_before": facts["not_before"], "not_after": facts["not_after"],
            "issued_at": pem.iso(now or pem.utcnow()), "reason": reason, "status": "valid", "revoked_at": None}


def reconcile(index, kind, name, issuer_name, cert, profile=None):
    """Add a record for a certificate on disk the index does not know (e.g. after a crash before the
    index was written). Returns True if the index changed."""
    if index.has_serial(issuer_name, pem.serial_hex(cert)):
        return False
    index.add(record(kind, name, issuer_name, cert, profile, reason="recorded"))
    return True
