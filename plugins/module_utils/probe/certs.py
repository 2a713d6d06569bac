"""Reading certificates and CRLs for the probe, with old (naive ``not_valid_after``) and new
(``not_valid_after_utc``) ``cryptography`` alike: the probe also runs on client hosts with their system
Python and library (e.g. Debian 12's cryptography 38), so it imports nothing from the PKI engine."""

import datetime as dt
import re

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


class ProbeError(Exception):
    """A bad input (unreadable file, key not matching the certificate): the probe cannot run."""


def utc_time(obj, name):
    value = getattr(obj, name + "_utc", None)
    if value is None:
        value = getattr(obj, name)
        value = value.replace(tzinfo=dt.timezone.utc) if value is not None else None
    return value


def not_before(cert):
    return utc_time(cert, "not_valid_before")


def not_after(cert):
    return utc_time(cert, "not_valid_after")


def iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def load_pem_certs(data, what):
    certs = []
    for block in _PEM_CERT.findall(data or b""):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise ProbeError(f"{what} holds a PEM certificate that cannot be read (corrupted?)") from None
    return certs


def load_pem_crls(data, what):
    crls = []
    for block in _PEM_CRL.findall(data or b""):
        try:
            crls.append(x509.load_pem_x509_crl(block))
        except ValueError:
            raise ProbeError(f"{what} holds a PEM CRL that cannot be read (corrupted?)") from None
    return crls


def der(cert_or_name):
    if isinstance(cert_or_name, x509.Name):
        return cert_or_name.public_bytes()
    return cert_or_name.public_bytes(serialization.Encoding.DER)


def _ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert):
    bc = _ext(cert, x509.BasicConstraints)
    return bool(bc and bc.ca)


def self_signed(cert):
    return cert.issuer == cert.subject


def ekus(cert):
    value = _ext(cert, x509.ExtendedKeyUsage)
    return None if value is None else set(value)


def san(cert):
    value = _ext(cert, x509.SubjectAlternativeName)
    if value is None:
        return [], []
    return ([d.lower() for d in value.get_values_for_type(x509.DNSName)],
            [str(i) for i in value.get_values_for_type(x509.IPAddress)])


def name_text(name):
    return name.rfc4514_string()


def facts(cert, now=None):
    """What the probe reports about one certificate."""
    now = now or utcnow()
    dns, ips = san(cert)
    return {"subject": name_text(cert.subject), "issuer": name_text(cert.issuer),
            "serial": format(cert.serial_number, "x"), "not_before": iso(not_before(cert)),
            "not_after": iso(not_after(cert)),
            "days_remaining": round((not_after(cert) - now).total_seconds() / 86400, 2),
            "is_ca": is_ca(cert), "san_dns": dns, "san_ip": ips,
            "eku": sorted(getattr(e, "_name", e.dotted_string) for e in ekus(cert) or ())}
