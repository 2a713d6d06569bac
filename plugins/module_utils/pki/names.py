"""Validation of the names that go into certificates and into the store's paths."""

import ipaddress
import re
import unicodedata

from .errors import PkiError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def dns_name(value, allow_wildcard=True):
    """Return the DNS name lower-cased, or raise naming what is wrong with it.

    A wildcard is allowed only as the whole left-most label with at least two labels after it
    (``*.example.com``), which is what TLS clients accept.
    """
    if not isinstance(value, str) or not value:
        raise PkiError(f"invalid DNS name {value!r}: expected a non-empty host name such as 'www.example.com'")
    name = value.strip().lower().rstrip(".")
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        raise PkiError(f"invalid DNS name {value!r}: internationalized names must be given in "
                       f"their ASCII (punycode, 'xn--') form") from None
    if len(name) > 253:
        raise PkiError(f"invalid DNS name {value!r}: longer than 253 characters")
    labels = name.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            raise PkiError(f"invalid DNS name {value!r}: a wildcard is not allowed here")
        if len(labels) < 3:
            raise PkiError(f"invalid DNS name {value!r}: a wildcard needs at least two labels after it, "
                           f"e.g. '*.example.com'")
        labels = labels[1:]
    if labels[-1].isdigit():
        raise PkiError(f"invalid DNS name {value!r}: its last label {labels[-1]!r} is all digits, which no host "
                       f"name has (RFC 1123 2.1); an IP address goes in 'ip:' (e.g. ip: ['192.0.2.10'])")
    for label in labels:
        if "*" in label:
            raise PkiError(f"invalid DNS name {value!r}: '*' is only allowed as the whole left-most label, "
                           f"e.g. '*.example.com'")
        if not _LABEL.fullmatch(label):
            raise PkiError(f"invalid DNS name {value!r}: label {label!r} must be 1-63 letters, digits or "
                           f"hyphens, not starting or ending with a hyphen")
    return name


def ip_address(value):
    """Return an ``ipaddress`` address (IPv4 or IPv6), or raise naming the bad value."""
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise PkiError(f"invalid IP address {value!r}: expected an IPv4 address such as '192.0.2.10' "
                       f"or an IPv6 address such as '2001:db8::10'") from None
    if getattr(address, "scope_id", None):  # a certificate holds no zone: it would differ on every run
        raise PkiError(f"invalid IP address {value!r}: a zone id ('%{address.scope_id}') cannot go in a "
                       f"certificate; give the address alone, e.g. '{str(value).strip().split('%', maxsplit=1)[0]}'")
    return address


def text(value, what):
    """Refuse control characters (newline, NUL, ...) in a text that goes into a certificate."""
    bad = sorted({c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if bad:
        raise PkiError(f"invalid {what} {value!r}: control characters ({', '.join(repr(c) for c in bad)}) "
                       f"are not allowed in a certificate")
    return value


def ip_network(value):
    """Return an ``ipaddress`` network for a name constraint (``10.0.0.0/8``)."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        raise PkiError(f"invalid IP network {value!r}: expected a network in CIDR form such as "
                       f"'10.0.0.0/8' or '2001:db8::/32' with no host bits set") from None


def email(value):
    """Return a lower-cased-domain e-mail address, or raise."""
    if not isinstance(value, str) or value.count("@") != 1:
        raise PkiError(f"invalid e-mail address {value!r}: expected 'user@example.com'")
    local, domain = value.strip().split("@")
    if not local or any(c.isspace() or not c.isprintable() for c in local):
        raise PkiError(f"invalid e-mail address {value!r}: the part before '@' is empty or has spaces or "
                       f"control characters")
    try:
        domain = dns_name(domain, allow_wildcard=False)
    except PkiError:
        raise PkiError(f"invalid e-mail address {value!r}: {domain!r} is not a valid domain") from None
    return f"{local}@{domain}"


def store_name(value, what="name"):
    """A name used as a directory in the store: one safe path component, never '..' or a path."""
    if not isinstance(value, str) or not _STORE_NAME.fullmatch(value) or value in (".", ".."):
        raise PkiError(f"invalid {what} {value!r}: use 1-128 letters, digits, '.', '_', '@' or '-', "
                       f"starting with a letter or digit (it becomes a directory name in pki_dir)")
    return value
