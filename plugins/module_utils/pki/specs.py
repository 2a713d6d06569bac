"""What the caller wants, as plain validated dataclasses built from option dicts."""

import math
from dataclasses import dataclass, field

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import keys, names
from .errors import PkiError

ROOT_DAYS, INTERMEDIATE_DAYS, LEAF_DAYS = 3650, 1825, 365
MAX_DAYS = 36500  # 100 years: the upper bound of valid_days and renew_before_days
PROFILES = ("server", "client", "both")
SUBJECT_FIELDS = {  # option name -> (NameOID attribute, max length per RFC 5280 upper bounds)
    "country": ("COUNTRY_NAME", 2),
    "state": ("STATE_OR_PROVINCE_NAME", 128),
    "locality": ("LOCALITY_NAME", 128),
    "organization": ("ORGANIZATION_NAME", 64),
    "organizational_unit": ("ORGANIZATIONAL_UNIT_NAME", 64),
    "common_name": ("COMMON_NAME", 64),
    "email": ("EMAIL_ADDRESS", 255),
}
PKCS12_ENCRYPTIONS = ("modern", "compat")
KEY_LOCATIONS = ("controller", "host")  # where a leaf's private key is made and kept


def _oid(field):
    """The OID of a SUBJECT_FIELDS field (looked up on use: cryptography may be absent at import time)."""
    return getattr(NameOID, SUBJECT_FIELDS[field][0])


@dataclass(frozen=True)
class Subject:
    """Distinguished name attributes in a fixed order (C, ST, L, O, OU, CN, emailAddress)."""
    attrs: tuple = ()  # ((field, value), ...)

    @property
    def common_name(self):
        return dict(self.attrs).get("common_name")

    def to_x509(self):
        return x509.Name([x509.NameAttribute(_oid(k), v) for k, v in self.attrs])

    @classmethod
    def from_x509(cls, name):
        by_oid = {_oid(k): k for k in SUBJECT_FIELDS}
        found = {by_oid.get(a.oid, a.oid.dotted_string): a.value for a in name}
        return cls(tuple((k, found[k]) for k in SUBJECT_FIELDS if k in found))


def subject(data, what):
    data = dict(data or {})
    unknown = sorted(set(data) - set(SUBJECT_FIELDS))
    if unknown:
        raise PkiError(f"unknown subject field(s) {', '.join(unknown)} in {what}: valid fields are "
                       f"{', '.join(SUBJECT_FIELDS)}")
    attrs = []
    for key, (_oid, limit) in SUBJECT_FIELDS.items():
        value = data.get(key)
        if value in (None, ""):
            continue
        value = names.text(str(value), f"subject {key} in {what}")
        if len(value) > limit:
            raise PkiError(f"subject {key} {value!r} in {what} is longer than {limit} characters")
        if key == "country" and not (len(value) == 2 and value.isalpha() and value.isupper()):
            raise PkiError(f"subject country {value!r} in {what}: use a two-letter upper-case ISO 3166 code such as 'DE'")
        if key == "email":
            value = names.email(value)
        attrs.append((key, value))
    return Subject(tuple(attrs))


@dataclass(frozen=True)
class NameConstraints:
    permitted_dns: tuple = ()
    excluded_dns: tuple = ()
    permitted_ip: tuple = ()
    excluded_ip: tuple = ()
    critical: bool = True

    def __bool__(self):
        return bool(self.permitted_dns or self.excluded_dns or self.permitted_ip or self.excluded_ip)

    def to_x509(self):
        def subtrees(dns, ips):
            trees = [x509.DNSName(d) for d in dns] + [x509.IPAddress(n) for n in ips]
            return trees or None
        return x509.NameConstraints(subtrees(self.permitted_dns, self.permitted_ip),
                                    subtrees(self.excluded_dns, self.excluded_ip))

    @classmethod
    def from_x509(cls, ext, critical):
        def split(trees):
            trees = trees or []
            return (tuple(t.value for t in trees if isinstance(t, x509.DNSName)),
                    tuple(t.value for t in trees if isinstance(t, x509.IPAddress)))
        pd, pi = split(ext.permitted_subtrees)
        ed, ei = split(ext.excluded_subtrees)
        return cls(pd, ed, pi, ei, critical)


def name_constraints(data, what):
    data = dict(data or {})
    valid = ("permitted_dns", "excluded_dns", "permitted_ip", "excluded_ip", "critical")
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise PkiError(f"unknown name_constraints key(s) {', '.join(unknown)} in {what}: valid keys are {', '.join(valid)}")

    def dns(key):  # a domain and every name below it; '.example.com' is read as 'example.com'
        # (RFC 5280 4.2.1.10 has no leading-dot form for DNS; verifiers such as cryptography's reject it)
        return tuple(sorted({names.dns_name(str(d).lstrip("."), allow_wildcard=False) for d in data.get(key) or []}))

    def ips(key):
        return tuple(sorted({names.ip_network(n) for n in data.get(key) or []}, key=str))
    return NameConstraints(dns("permitted_dns"), dns("excluded_dns"), ips("permitted_ip"), ips("excluded_ip"),
                           bool(data.get("critical", True)))


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _days(value, default, what):
    if value in (None, ""):
        return default
    days = _number(value)
    if not (math.isfinite(days) and 0 < days <= MAX_DAYS):
        raise PkiError(f"invalid valid_days {value!r} for {what}: expected a number of days > 0 and <= "
                       f"{MAX_DAYS} (100 years)")
    return days


def renew_before(value, what, valid_days=None):
    """A validated renew_before_days (None: the last third of the lifetime); below ``valid_days``, or the
    certificate would be due as soon as it is issued, and re-issued on every run."""
    if value in (None, ""):
        return None
    days = _number(value)
    if not (math.isfinite(days) and 0 <= days <= MAX_DAYS):
        raise PkiError(f"invalid renew_before_days {value!r} for {what}: expected a number of days >= 0 and <= "
                       f"{MAX_DAYS}")
    if valid_days is not None and days >= valid_days:
        raise PkiError(f"renew_before_days {days:g} for {what} is not below its valid_days {valid_days:g}: it "
                       f"would be due as soon as issued and re-issued on every run; use fewer days than "
                       f"{valid_days:g}, or omit it (the last third of the lifetime)")
    return days


@dataclass(frozen=True)
class CaSpec:
    name: str
    subject: Subject
    key: keys.KeySpec
    issuer: str = None  # None: a self-signed root
    valid_days: float = ROOT_DAYS
    path_length: int = None
    name_constraints: NameConstraints = field(default_factory=NameConstraints)
    renew_before_days: float = None  # None: the last third of the lifetime
    rotate_key: bool = False
    crl_url: str = ""  # base URL of the CRLs and CA certificates (intermediates point at their issuer's)


def crl_base_url(value, what):
    """The base URL certificates point at for revocation (<base><issuer>.crl / .crt), ending in '/'; '' for none.
    Plain HTTP: a CRL fetched over HTTPS would need a revocation check of its own (RFC 5280 8)."""
    if value in (None, ""):
        return ""
    value = str(value)
    rest = value[len("http://"):] if value.lower().startswith("http://") else None
    if not rest or not rest.split("/", maxsplit=1)[0] or any(c.isspace() or c in "?#\"\\<>" for c in value) or not value.isascii():
        raise PkiError(f"invalid crl_url {value!r} for {what}: expected a plain http:// base URL such as "
                       f"http://crl.example.com/ or http://crl.example.com/pki/ (no query, no spaces)")
    return value if value.endswith("/") else value + "/"


def ca_spec(name, subject_data=None, issuer=None, key_type="ec", key_size=None, curve=None, valid_days=None,
            path_length=None, name_constraints_data=None, renew_before_days=None, rotate_key=False, crl_url=None):
    name = names.store_name(name, "CA name")
    if issuer is not None:
        names.store_name(issuer, "issuer")
        if issuer == name:
            raise PkiError(f"CA {name!r} names itself as issuer: omit issuer for a self-signed root")
    subj = subject(subject_data or {"common_name": name}, f"CA {name!r}")
    if not subj.common_name:
        subj = Subject(subj.attrs + (("common_name", name),))
        subj = subject(dict(subj.attrs), f"CA {name!r}")
    if path_length is not None and (not isinstance(path_length, int) or path_length < 0):
        raise PkiError(f"invalid path_length {path_length!r} for CA {name!r}: expected an integer >= 0 "
                       f"(0: may issue only leaf certificates), or omit it for no limit")
    return CaSpec(name=name, subject=subj, key=keys.key_spec(key_type, key_size, curve), issuer=issuer,
                  valid_days=_days(valid_days, INTERMEDIATE_DAYS if issuer else ROOT_DAYS, f"CA {name!r}"),
                  path_length=path_length, name_constraints=name_constraints(name_constraints_data, f"CA {name!r}"),
                  renew_before_days=renew_before(renew_before_days, f"CA {name!r}",
                                                 _days(valid_days, INTERMEDIATE_DAYS if issuer else ROOT_DAYS, "")),
                  rotate_key=bool(rotate_key), crl_url=crl_base_url(crl_url, f"CA {name!r}"))


@dataclass(frozen=True)
class Pkcs12Spec:
    password: str = ""
    encryption: str = "modern"
    friendly_name: str = ""
    include_chain: bool = True


@dataclass(frozen=True)
class LeafSpec:
    name: str
    profile: str
    subject: Subject
    dns: tuple = ()
    ip: tuple = ()
    email: tuple = ()
    key: keys.KeySpec = keys.KeySpec("ec", curve="P-256")
    valid_days: float = LEAF_DAYS
    renew_before_days: float = None
    rotate_key: bool = False
    force: bool = False
    pkcs12: Pkcs12Spec = None  # built in the store for controller keys, on the host for host keys
    key_location: str = "controller"
    crl_url: str = ""  # base URL: the certificate points at <crl_url><issuer>.crl and .crt

    def san(self):
        """The SAN entries in a canonical, comparable form."""
        return {("dns", d) for d in self.dns} | {("ip", str(i)) for i in self.ip} | {("email", e) for e in self.email}


LEAF_KEYS = {"name", "profile", "dns", "ip", "email", "key_type", "key_size", "curve", "valid_days",
             "renew_before_days", "rotate_key", "force", "pkcs12", "subject", "key_location", "crl_url"} | set(SUBJECT_FIELDS)
PKCS12_KEYS = {"password", "encryption", "friendly_name", "include_chain"}


def _list(value):
    if value in (None, ""):
        return []
    return [value] if isinstance(value, (str, int)) else list(value)


def leaf_spec(item, defaults=None):
    """A LeafSpec from one item of the certificates list, with shared defaults under it."""
    if not isinstance(item, dict):
        raise PkiError(f"each certificate must be a dict with at least 'name', got {item!r}")
    merged = {k: v for k, v in (defaults or {}).items() if v is not None}
    if "name" in merged:
        raise PkiError(f"defaults may not set 'name' (got {merged['name']!r}): each certificate names itself")
    for key, value in item.items():
        if value is None:
            continue
        if key == "pkcs12" and isinstance(value, dict) and isinstance(merged.get("pkcs12"), dict):
            value = {**merged["pkcs12"], **{k: v for k, v in value.items() if v is not None}}
        merged[key] = value
    if merged.get("name") is None:
        raise PkiError(f"certificate {item!r} has no name: each item of the list needs 'name'")
    name = names.store_name(merged.get("name"), "certificate name")
    what = f"certificate {name!r}"
    unknown = sorted(set(merged) - LEAF_KEYS)
    if unknown:
        raise PkiError(f"unknown option(s) {', '.join(unknown)} in {what}: valid options are {', '.join(sorted(LEAF_KEYS))}")
    profile = merged.get("profile") or "server"
    if profile not in PROFILES:
        raise PkiError(f"unknown profile {profile!r} in {what}: valid profiles are {', '.join(PROFILES)}")
    subj_data = dict(merged.get("subject") or {})
    # the flat 'email' option is the SAN list; a subject emailAddress goes in 'subject'
    subj_data.update({k: merged[k] for k in SUBJECT_FIELDS if k != "email" and merged.get(k) not in (None, "")})
    subj = subject(subj_data, what)
    dns = [names.dns_name(d) for d in _list(merged.get("dns"))]
    ips = [names.ip_address(i) for i in _list(merged.get("ip"))]
    emails = [names.email(e) for e in _list(merged.get("email"))]
    cn = subj.common_name
    if cn and profile in ("server", "both"):
        # A server's CN is put into the SAN too: clients only look at the SAN.
        try:
            ips.append(names.ip_address(cn)) if _looks_like_ip(cn) else dns.append(names.dns_name(cn))
        except PkiError as e:
            raise PkiError(f"common_name {cn!r} of server {what} must be a DNS name or IP address "
                           f"(it is added to the SAN): {e}") from None
    if not (cn or dns or ips or emails):
        raise PkiError(f"{what} has no identity: give a common_name, dns, ip or email")
    if profile in ("server", "both") and not (dns or ips):
        raise PkiError(f"server {what} needs at least one DNS name or IP address (dns, ip or common_name)")
    key_location = merged.get("key_location") or "controller"
    if key_location not in KEY_LOCATIONS:
        raise PkiError(f"unknown key_location {key_location!r} in {what}: use 'controller' (made in the store and "
                       f"pushed) or 'host' (made on the host, which sends a CSR)")
    p12 = merged.get("pkcs12")
    if p12 not in (None, False, {}):
        p12 = _pkcs12_spec(p12 if isinstance(p12, dict) else {}, what, name)
    else:
        p12 = None
    valid_days = _days(merged.get("valid_days"), LEAF_DAYS, what)
    return LeafSpec(name=name, profile=profile, subject=subj, dns=tuple(dict.fromkeys(dns)),
                    ip=tuple(dict.fromkeys(ips)), email=tuple(dict.fromkeys(emails)),
                    key=keys.key_spec(merged.get("key_type"), merged.get("key_size"), merged.get("curve")),
                    valid_days=valid_days,
                    renew_before_days=renew_before(merged.get("renew_before_days"), what, valid_days),
                    rotate_key=bool(merged.get("rotate_key")), force=bool(merged.get("force")), pkcs12=p12,
                    key_location=key_location, crl_url=crl_base_url(merged.get("crl_url"), what))


def _looks_like_ip(value):
    try:
        names.ip_address(value)
        return True
    except PkiError:
        return False


def _pkcs12_spec(data, what, name):
    unknown = sorted(set(data) - PKCS12_KEYS)
    if unknown:
        raise PkiError(f"unknown pkcs12 option(s) {', '.join(unknown)} in {what}: valid options are {', '.join(sorted(PKCS12_KEYS))}")
    enc = data.get("encryption") or "modern"
    if enc not in PKCS12_ENCRYPTIONS:
        raise PkiError(f"unknown pkcs12 encryption {enc!r} in {what}: use 'modern' (AES-256, PBKDF2) or "
                       f"'compat' (3DES, SHA-1 MAC, for older macOS, Windows and Java)")
    password = data.get("password")
    password = "" if password is None else str(password)
    friendly_name = names.text(str(data.get("friendly_name") or name), f"pkcs12 friendly_name in {what}")
    return Pkcs12Spec(password=password, encryption=enc, friendly_name=friendly_name,
                      include_chain=data.get("include_chain") is not False)


def task_window_warnings(leaf_specs, renew_before_days):
    """{name: [warning]} for the certificates a task-level renew_before_days (validated here) makes due as soon
    as issued. Not refused, unlike an item's own: a one-off run with a wide window is a renewal sweep."""
    days = renew_before(renew_before_days, "the task (renew_before_days)")
    return {s.name: [f"certificate {s.name!r}: renew_before_days {days:g} is not below its valid_days "
                     f"{s.valid_days:g}, so it is due as soon as issued: every run with this setting re-issues it"]
            for s in leaf_specs if days is not None and s.renew_before_days is None and days >= s.valid_days}
