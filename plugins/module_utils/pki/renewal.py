"""Renewal policy: why (if at all) a certificate must be issued again."""

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import keys, pem
from .build import ekus, revocation_base
from .specs import NameConstraints, Subject


def due(cert, renew_before_days, now):
    """'due: N days left' when inside the renewal window (default: the last third of the lifetime)."""
    window = pem.lifetime_days(cert) / 3 if renew_before_days is None else renew_before_days
    left = pem.days_left(cert, now)
    if left > window:
        return None
    if left <= 0:
        return "expired"
    return f"due: {left:.0f} days left" if left >= 2 else f"due: {left * 24:.0f} hours left"


def issuer_changed(cert, issuer_cert):
    return cert.issuer != issuer_cert.subject or pem.aki(cert) != pem.ski(issuer_cert)


def outlives_issuer(cert, issuer_cert):
    return cert.not_valid_after_utc > issuer_cert.not_valid_after_utc


def key_changed(spec_key, key):
    return keys.spec_of(key) != spec_key


def leaf_changes(spec, cert):
    """Names of the spec fields the certificate no longer matches."""
    changes = []
    if pem.ekus(cert) != set(ekus(spec.profile)):
        changes.append("profile")
    have = pem.san(cert)
    want = spec.san()
    for kind in ("dns", "ip", "email"):
        if {v for k, v in have if k == kind} != {v for k, v in want if k == kind}:
            changes.append(kind)
    if Subject.from_x509(cert.subject) != spec.subject:
        changes.append("subject")
    if revocation_base(cert) != spec.crl_url:
        changes.append("crl_url")
    return changes


def ca_changes(spec, cert):
    changes = []
    if Subject.from_x509(cert.subject) != spec.subject:
        changes.append("subject")
    if spec.issuer and revocation_base(cert) != spec.crl_url:
        changes.append("crl_url")
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if bc.path_length != spec.path_length:
        changes.append("path_length")
    try:
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
        have = NameConstraints.from_x509(ext.value, ext.critical)
    except x509.ExtensionNotFound:
        have = NameConstraints()
    if (bool(have) or bool(spec.name_constraints)) and _nc_key(have) != _nc_key(spec.name_constraints):
        changes.append("name_constraints")
    return changes


def _nc_key(nc):
    return (sorted(nc.permitted_dns), sorted(nc.excluded_dns), sorted(map(str, nc.permitted_ip)),
            sorted(map(str, nc.excluded_ip)), nc.critical if nc else None)


def ca_lifecycle_reasons(spec, cert, issuer_cert, force, now):
    """The reasons a CA certificate is issued again that do not depend on where its key lives: its issuer
    changed (or a root is no longer self-signed), it outlives its issuer, it is due, or it is forced."""
    reasons = []
    if issuer_cert is not None and issuer_changed(cert, issuer_cert):
        reasons.append("issuer_changed")
    elif issuer_cert is None and cert.issuer != cert.subject:
        reasons.append("issuer_changed")
    elif issuer_cert is not None and outlives_issuer(cert, issuer_cert):
        reasons.append("outlives_issuer")
    when = due(cert, spec.renew_before_days, now)
    if when:
        reasons.append(when)
    if force:
        reasons.append("forced")
    return reasons
