"""Reading and writing certificates as PEM, and the facts callers report about them."""

import datetime as dt
import re

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from .errors import PkiError

_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def load_cert(data, path):
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PkiError(f"{path} is not a readable PEM certificate (corrupted or truncated)", "corrupt") from None


def load_certs(data, path):
    """All certificates of a PEM bundle, in order."""
    blocks = _BLOCK.findall(data or b"")
    return [load_cert(b, path) for b in blocks]


def to_pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def fingerprint(cert):
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def serial_hex(cert):
    return format(cert.serial_number, "x")


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def days_left(cert, now):
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def lifetime_days(cert):
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400


def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def ski(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def aki(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def san(cert):
    """SAN entries as a set of ('dns'|'ip'|'email', value) pairs."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return ({("dns", v.lower()) for v in ext.get_values_for_type(x509.DNSName)}
            | {("ip", str(v)) for v in ext.get_values_for_type(x509.IPAddress)}
            | {("email", v) for v in ext.get_values_for_type(x509.RFC822Name)})


def ekus(cert):
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def facts(cert, now=None):
    """The non-secret facts a module returns about a certificate."""
    now = now or utcnow()
    return {"serial": serial_hex(cert), "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(), "not_before": iso(cert.not_valid_before_utc),
            "not_after": iso(cert.not_valid_after_utc), "days_remaining": round(days_left(cert, now), 2),
            "fingerprint_sha256": fingerprint(cert)}
