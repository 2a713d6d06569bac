"""Probe a TLS server as a client would and explain what is wrong (the engine of ``mtls.rollout.probe``).

Three parts:

* TLS message parsing (pure): the server's Certificate and CertificateRequest handshake messages, as
  OpenSSL hands them to the message callback of Python's ``ssl`` (decrypted under TLS 1.3 too). They
  give the certificate list exactly as sent (Python's ``ssl`` has no public way to read it before 3.13)
  and the acceptable client CA names (no way at all in ``ssl``).
* ``observe`` (network, standard library ``ssl`` only): one handshake that verifies nothing, with the
  client certificate when given, and an HTTP GET over it; a second handshake that verifies the server
  against ``ca_file`` with OpenSSL, for its verdict and error code.
* ``diagnose`` (pure): turns the observed facts into ``{code, message}`` items, each a plain sentence
  that names the cause and the fix.

This module runs wherever the probe runs (the control node, or a client host with its system Python
and an older ``cryptography``, e.g. Debian 12's 38), so it imports no other part of the engine, and reads
certificate times through helpers that work with old (naive ``not_valid_after``) and new
(``not_valid_after_utc``) ``cryptography``.
"""

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

HANDSHAKE = 22
CERTIFICATE, CERTIFICATE_REQUEST = 11, 13
EXT_CERTIFICATE_AUTHORITIES = 47
TLS13 = 0x0304
NGINX_NO_CERT = "No required SSL certificate was sent"
NGINX_CERT_ERROR = "The SSL certificate error"
NGINX_DEFAULT_DEPTH = 1
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


class ProbeError(Exception):
    """A bad input (unreadable file, key not matching the certificate): the probe cannot run."""


# --- reading certificates and CRLs (old and new cryptography) -------------------------------------------

def _utc(obj, name):
    value = getattr(obj, name + "_utc", None)
    if value is None:
        value = getattr(obj, name)
        value = value.replace(tzinfo=dt.timezone.utc) if value is not None else None
    return value


def not_before(cert):
    return _utc(cert, "not_valid_before")


def not_after(cert):
    return _utc(cert, "not_valid_after")


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


# --- TLS handshake messages (pure) ------------------------------------------------------------------

class _Reader:
    def __init__(self, data):
        self.data, self.pos = bytes(data), 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated TLS message")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes):
        return self.take(self.uint(length_bytes))

    @property
    def left(self):
        return len(self.data) - self.pos


def handshake_body(message):
    """(type, body) of a handshake message with its 4-byte header."""
    r = _Reader(message)
    kind = r.uint(1)
    return kind, r.vector(3)


def parse_certificate_message(body, tls13):
    """DER certificates of a Certificate message body, in the order sent."""
    r = _Reader(body)
    if tls13:
        r.vector(1)  # certificate_request_context
    entries = _Reader(r.vector(3))
    out = []
    while entries.left:
        out.append(entries.vector(3))
        if tls13:
            entries.vector(2)  # per-certificate extensions
    return out


def parse_certificate_request(body, tls13):
    """DER distinguished names of the acceptable CAs in a CertificateRequest message body."""
    r = _Reader(body)
    if tls13:
        r.vector(1)  # certificate_request_context
        extensions = _Reader(r.vector(2))
        while extensions.left:
            kind, data = extensions.uint(2), extensions.vector(2)
            if kind == EXT_CERTIFICATE_AUTHORITIES:
                return _names(_Reader(data).vector(2))
        return []
    r.vector(1)  # certificate_types
    r.vector(2)  # supported_signature_algorithms
    return _names(r.vector(2))


def _names(data):
    r, out = _Reader(data), []
    while r.left:
        out.append(r.vector(2))
    return out


def _der_tlv(r):
    tag = r.uint(1)
    length = r.uint(1)
    if length & 0x80:
        length = r.uint(length & 0x7F)
    return tag, r.take(length)


def _oid(data):
    parts, value = [], 0
    for b in data:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(value)
            value = 0
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in head + parts[1:])


_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
                  0x1C: "utf-32-be", 0x1A: "ascii"}


def parse_name(name_der):
    """An ``x509.Name`` from the DER of a distinguished name (as a CertificateRequest carries it)."""
    outer_tag, content = _der_tlv(_Reader(name_der))
    if outer_tag != 0x30:
        raise ValueError("not a DER Name")
    rdns, sets = [], _Reader(content)
    while sets.left:
        tag, rdn = _der_tlv(sets)
        attrs, seqs = [], _Reader(rdn)
        while seqs.left:
            _tag, atv = _der_tlv(seqs)
            atv_r = _Reader(atv)
            _oid_tag, oid = _der_tlv(atv_r)
            value_tag, value = _der_tlv(atv_r)
            codec = _STRING_CODECS.get(value_tag)
            text = value.decode(codec) if codec else "#" + value.hex()
            attrs.append(x509.NameAttribute(x509.ObjectIdentifier(_oid(oid)), text))
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def name_from_der(name_der):
    """Readable form of a DER name; never fails (falls back to hex)."""
    try:
        return name_text(parse_name(name_der))
    except (ValueError, UnicodeDecodeError):
        return "#" + bytes(name_der).hex()


def messages_to_facts(messages):
    """From [(version, handshake message)] the server sent: (certificate DERs or None, CA name DERs or None).

    ``None`` for the CA names means the server sent no CertificateRequest.
    """
    chain, names = None, None
    for version, message in messages:
        kind, body = handshake_body(message)
        tls13 = version == TLS13
        if kind == CERTIFICATE and chain is None:
            chain = parse_certificate_message(body, tls13)
        elif kind == CERTIFICATE_REQUEST and names is None:
            names = parse_certificate_request(body, tls13)
    return chain, names


# --- what was observed, and what it means (pure) ----------------------------------------------------

@dataclass
class Observation:
    host: str
    port: int = 443
    name: str = None  # the name or IP the client expects in the server certificate (SNI name, else host)
    expect_names: list = field(default_factory=list)
    connect_error: str = None
    handshake_error: str = None  # the TLS handshake (or the first read after it) failed
    alert: str = None  # OpenSSL's reason, e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED
    protocol: str = None
    cipher: str = None
    server_chain: list = field(default_factory=list)  # x509 certificates, as sent
    verified: bool = None  # None: no CA file given
    verify_code: int = None
    verify_message: str = None
    anchors: list = field(default_factory=list)
    client_auth_requested: bool = False
    acceptable_ca_names: list = field(default_factory=list)  # DER names
    client_chain: list = field(default_factory=list)  # what the client sent, leaf first
    revoked: dict = field(default_factory=dict)  # serial (int) -> description (where it was found)
    revocation_checked: bool = False
    http_status: int = None
    http_reason: str = None
    expect_client_auth: bool = None


def problem(code, message):
    return {"code": code, "message": message}


def diagnose(obs, now=None):
    """Every cause found, as {code, message}; empty when the request went through as it should."""
    now = now or utcnow()
    if obs.connect_error:
        return [problem("connection_failed", f"could not connect to {obs.host}:{obs.port}: {obs.connect_error}; is "
                                             f"nginx running and listening on port {obs.port} there, and is the "
                                             f"address right?")]
    found = []
    if obs.server_chain:
        found += _server_problems(obs, now)
    elif obs.handshake_error:
        found.append(problem("handshake_failed", f"the TLS handshake with {obs.host}:{obs.port} failed before the "
                                                 f"server sent a certificate: {obs.handshake_error}; is it a TLS "
                                                 f"port, and does it offer TLS 1.2 or 1.3?"))
        return found
    found += _client_problems(obs, now)
    said = obs.http_reason or ""
    if obs.http_status is not None and obs.http_status >= 400 and not (
            obs.http_status == 400 and (NGINX_NO_CERT in said or NGINX_CERT_ERROR in said)):
        found.append(_http_problem(obs))
    return found


def _server_problems(obs, now):
    found, chain, leaf = [], obs.server_chain, obs.server_chain[0]
    anchor_subjects = {der(a.subject) for a in obs.anchors}
    for i in range(len(chain) - 1):
        if chain[i].issuer != chain[i + 1].subject:
            found.append(problem("server_chain_order",
                                 f"the server's certificate list is out of order or holds a stranger: certificate "
                                 f"{i + 2} ({name_text(chain[i + 1].subject)}) did not issue certificate {i + 1} "
                                 f"({name_text(chain[i].subject)}); ssl_certificate must hold the server certificate "
                                 f"first, then its issuing CA, then the CAs above it (the store's fullchain.pem)"))
            break
    if len(chain) == 1 and not self_signed(leaf) and der(leaf.issuer) not in anchor_subjects and obs.verified is not True:
        hedge = ("" if obs.verified is False
                 else f" (unless {name_text(leaf.issuer)} is itself a root that every client trusts)")
        found.append(problem("server_missing_intermediate",
                             f"the server sends only its own certificate, without the intermediate CA "
                             f"{name_text(leaf.issuer)} that issued it{hedge}: clients that trust only the root "
                             f"cannot build a chain ('unable to get local issuer certificate'); ssl_certificate must "
                             f"point at fullchain.pem (the server certificate, then the intermediates) - re-run "
                             f"site.yml to put it back"))
    for i, cert in enumerate(chain):
        what = "server certificate" if i == 0 else f"CA certificate {name_text(cert.subject)} sent by the server"
        if not_after(cert) <= now:
            found.append(problem("server_expired" if i == 0 else "server_chain_expired",
                                 f"the {what} expired on {iso(not_after(cert))}: renew it (renew.yml) and let the "
                                 f"nginx role deploy it"))
        elif not_before(cert) > now:
            found.append(problem("server_not_yet_valid",
                                 f"the {what} is not valid before {iso(not_before(cert))}: the clocks of the issuing "
                                 f"machine and of this one disagree - check NTP"))
    usages = ekus(leaf)
    if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        found.append(problem("server_wrong_purpose",
                             "the server certificate lacks the serverAuth extended key usage (a client certificate "
                             "used as a server?): issue it with profile server or both"))
    found += _name_problems(obs, leaf)
    explained = {"server_missing_intermediate", "server_expired", "server_chain_expired", "server_not_yet_valid",
                 "server_wrong_purpose"}
    if obs.verified is False and not any(p["code"] in explained for p in found):
        found.append(problem("server_untrusted",
                             f"the server's chain does not verify against the CA file given: OpenSSL error "
                             f"{obs.verify_code} ({obs.verify_message}); the server uses a certificate from another "
                             f"CA, sends an incomplete chain (a CA between its issuer and the root is missing from "
                             f"fullchain.pem), or the CA file is not this fleet's root (ca.pem)"))
    return found


def _name_problems(obs, leaf):
    dns, ips = san(leaf)
    wanted = [n for n in dict.fromkeys([obs.name] + list(obs.expect_names or [])) if n]
    found = []
    for name in wanted:
        ip = _ip(name)
        if ip is not None:
            if str(ip) not in ips:
                found.append(problem("ip_not_in_san",
                                     f"{ip} is not in the server certificate's subject alternative names "
                                     f"({_listing(dns, ips)}), so clients connecting by that address refuse it: add it "
                                     f"to mtls_server_ips (or connect by a name listed) and re-run site.yml"))
        elif not any(_dns_match(pattern, name) for pattern in dns):
            found.append(problem("name_not_in_san",
                                 f"{name} is not in the server certificate's subject alternative names "
                                 f"({_listing(dns, ips)}), so clients using that name refuse it: add it to "
                                 f"mtls_server_names and re-run site.yml, or use a name listed"))
    return found


def _listing(dns, ips):
    return ", ".join(dns + ips) or "none"


def _ip(text):
    try:
        return ipaddress.ip_address(str(text).strip("[]"))
    except ValueError:
        return None


def _dns_match(pattern, name):
    name = name.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _sep, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def client_depth(chain):
    """Intermediate CAs in a client chain (leaf first): what ssl_verify_depth must at least be."""
    return sum(1 for c in chain[1:] if not self_signed(c))


def _client_problems(obs, now):
    found = []
    if obs.expect_client_auth and not obs.client_auth_requested:
        found.append(problem("client_auth_not_requested",
                             "the server did not ask for a client certificate: ssl_verify_client is off there (or "
                             "another server block answered this name); set mtls_verify_client: on and re-run site.yml"))
    if obs.client_auth_requested and not obs.acceptable_ca_names:
        found.append(problem("no_acceptable_ca_names",
                             "the server asks for a client certificate but names no acceptable CA, so clients such as "
                             "browsers cannot pick one: ssl_client_certificate is missing or empty"))
    said = obs.http_reason or ""
    alert = (obs.alert or "").upper()
    if not obs.client_chain:
        if NGINX_NO_CERT in said or "CERTIFICATE_REQUIRED" in alert:
            found.append(problem("client_certificate_required",
                                 "the server requires a client certificate and none was sent: give the client its "
                                 "certificate and key (client_cert, client_key; on client hosts "
                                 "/etc/mtls/client/cert.pem and key.pem)"))
        return found
    leaf = obs.client_chain[0]
    rejected = NGINX_CERT_ERROR in said or (obs.handshake_error is not None and obs.alert is not None)
    if NGINX_NO_CERT in said:
        found.append(problem("client_certificate_not_sent",
                             "a client certificate was given but the server says none was sent: the client key type may "
                             "not match the signature algorithms the server accepts, or a proxy in between ends TLS"))
        return found
    causes = []
    names = set(obs.acceptable_ca_names or [])
    if names and not any(der(c.issuer) in names for c in obs.client_chain):
        accepted = "; ".join(name_from_der(n) for n in obs.acceptable_ca_names)
        causes.append(problem("client_ca_not_accepted",
                              f"the client certificate was issued by {name_text(leaf.issuer)}, which is not among the CAs "
                              f"the server accepts ({accepted}): use a certificate from one of those CAs, or add its CA to "
                              f"ssl_client_certificate (mtls_nginx_client_issuers) and re-run site.yml"))
    for i, cert in enumerate(obs.client_chain):
        what = "client certificate" if i == 0 else f"client chain CA {name_text(cert.subject)}"
        if not_after(cert) <= now:
            causes.append(problem("client_expired",
                                  f"the {what} expired on {iso(not_after(cert))} (nginx: 'certificate has expired', "
                                  f"error 10): renew it (renew.yml) and redeploy the client"))
        elif not_before(cert) > now:
            causes.append(problem("client_not_yet_valid",
                                  f"the {what} is not valid before {iso(not_before(cert))} (nginx error 9): the clocks "
                                  f"of the issuing machine and of the server disagree - check NTP"))
    usages = ekus(leaf)
    if is_ca(leaf):
        causes.append(problem("client_wrong_purpose",
                              "the client certificate is a CA certificate, not an end-entity one: use a client "
                              "certificate issued with profile client"))
    elif usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        causes.append(problem("client_wrong_purpose",
                              "the client certificate lacks the clientAuth extended key usage (a server certificate "
                              "used as a client?), so nginx refuses it ('unsupported certificate purpose', error 26): "
                              "issue a certificate with profile client or both"))
    revoked = [(c, obs.revoked[c.serial_number]) for c in obs.client_chain if c.serial_number in obs.revoked]
    for cert, where in revoked:
        if rejected:
            causes.append(problem("client_revoked",
                                  f"the certificate {name_text(cert.subject)} (serial {cert.serial_number:x}) is "
                                  f"revoked ({where}), and the server knows it from its CRL (nginx: 'certificate "
                                  f"revoked', error 23): issue a new identity for this client"))
        else:
            found.append(problem("revoked_client_accepted",
                                 f"the server accepted the certificate {name_text(cert.subject)} (serial "
                                 f"{cert.serial_number:x}) although it is revoked ({where}): the server has no current "
                                 f"CRL - set mtls_nginx_crl: true and run revoke.yml (or site.yml)"))
    if rejected:
        depth = client_depth(obs.client_chain)
        if not causes and depth > NGINX_DEFAULT_DEPTH:
            causes.append(problem("client_chain_too_deep",
                                  f"the client certificate sits under {depth} intermediate CAs, its CA is accepted and "
                                  f"it is valid, so ssl_verify_depth is most likely lower than {depth} (nginx's default "
                                  f"is 1; 'unable to get issuer certificate', error 2/20): set ssl_verify_depth to at "
                                  f"least {depth} - the nginx role computes it from mtls_nginx_client_issuers' chains, "
                                  f"do not override it"))
        if not causes:
            unknown = "" if obs.revocation_checked else " (revocation was not checked: pass crl_files or pki_dir)"
            causes.append(problem("client_rejected",
                                  f"the server rejected the client certificate although it is valid, issued by an "
                                  f"accepted CA and not revoked as far as known{unknown}: look for 'client SSL "
                                  f"certificate verify error' in nginx's error.log. Common causes: ssl_crl is on but "
                                  f"a CA level has no current CRL (errors 3/12; publish the CRL of every CA with "
                                  f"revoke.yml or site.yml), a CA above the issuer is missing from "
                                  f"ssl_client_certificate (error 2), ssl_verify_depth lower than the chain"
                                  + (f"; the server said: {obs.alert}" if obs.alert else "")))
        found += causes
    return found


def _http_problem(obs):
    status = obs.http_status
    reason = f" ({obs.http_reason})" if obs.http_reason else ""
    if status in (502, 503, 504):
        return problem("backend_unavailable", f"nginx answered {status}{reason}: it could not reach its backend "
                                              f"(mtls_nginx_backend / proxy_pass); start it or fix the URL")
    return problem("http_error", f"the request got HTTP {status}{reason}")


# --- the network part ------------------------------------------------------------------------------------

def _context(messages=None, cafile=None, certfile=None, keyfile=None, password=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # names are checked against the SAN by diagnose(), reported separately
    if cafile:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=cafile)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        try:
            # always a callback: without one OpenSSL would ask for a passphrase on the terminal
            ctx.load_cert_chain(certfile, keyfile, password=lambda: password or "")
        except ssl.SSLError as e:
            raise ProbeError(f"cannot use client certificate {certfile} with key {keyfile or certfile}: {e.reason or e} "
                             f"(a wrong or missing client_key_passphrase, or a key that does not belong to the certificate)") from None
        except OSError as e:
            raise ProbeError(f"cannot read client certificate {certfile} or key {keyfile}: {e.strerror}") from None
    if messages is not None and hasattr(ctx, "_msg_callback"):
        def record(_conn, direction, version, content_type, _msg_type, data):
            if direction == "read" and int(content_type) == HANDSHAKE:
                messages.append((int(version), bytes(data)))
        ctx._msg_callback = record
    return ctx


def _describe(err):
    if isinstance(err, socket.timeout):
        return "timed out"
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    return err.strerror or str(err)


def _http_get(tls, host_header, path, timeout):
    tls.settimeout(timeout)
    if ":" in host_header:
        host_header = f"[{host_header}]"  # an IPv6 address
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: mtls.rollout.probe\r\n"
                f"Accept: */*\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while len(data) < 65536:
        try:
            chunk = tls.recv(16384)
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and _complete(data):
            break
    return parse_http_response(data)


def _complete(data):
    head, _sep, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(m) and len(body) >= int(m.group(1))


def parse_http_response(data):
    """(status, reason, body text): nginx's own error pages give their reason in <title>."""
    head, _sep, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})(?: ([^\r\n]*))?", head)
    if not m:
        return None, None, ""
    text = body.decode("utf-8", "replace")
    title = re.search(r"<title>\s*\d{3}\s+(.*?)\s*</title>", text, re.S)
    reason = title.group(1) if title else (m.group(2) or b"").decode("latin-1")
    return int(m.group(1)), reason, text


def observe(host, port=443, server_name=None, ca_file=None, client_cert=None, client_key=None, client_key_password=None,
            client_chain=None, path="/", timeout=10.0, http=True, expect_names=(), expect_client_auth=None,
            crl_files=(), revoked_serials=None):
    """Connect as a client and collect an ``Observation``. ``revoked_serials``: {serial int: where} known
    from elsewhere (e.g. the store's index)."""
    name = server_name or host
    obs = Observation(host=host, port=int(port), name=name, expect_names=list(expect_names or ()),
                      expect_client_auth=expect_client_auth)
    obs.anchors = load_pem_certs(_read(ca_file), ca_file) if ca_file else []
    if client_cert:
        obs.client_chain = load_pem_certs(_read(client_cert), client_cert)
        if not obs.client_chain:
            raise ProbeError(f"{client_cert} holds no PEM certificate")
        if client_chain:
            extra = load_pem_certs(_read(client_chain), client_chain)
            obs.client_chain += [c for c in extra if der(c) not in {der(x) for x in obs.client_chain}]
    for path_ in crl_files or ():
        for crl in load_pem_crls(_read(path_), path_):
            obs.revocation_checked = True
            for entry in crl:
                obs.revoked[entry.serial_number] = (f"on the CRL of {name_text(crl.issuer)} since "
                                                    f"{iso(_utc(entry, 'revocation_date'))}")
    if revoked_serials is not None:
        obs.revocation_checked = True
        for serial, where in revoked_serials.items():
            obs.revoked.setdefault(serial, where)
    sni = None if _ip(name) is not None else name

    messages = []
    ctx = _context(messages, certfile=client_cert, keyfile=client_key, password=client_key_password)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as e:
        obs.connect_error = _describe(e)
        return obs
    with raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=sni) as tls:
                obs.protocol, obs.cipher = tls.version(), tls.cipher()[0]
                if not messages:  # no message callback in this Python: at least the chain
                    obs.server_chain = _unverified_chain(tls)
                if http:
                    obs.http_status, obs.http_reason, _body = _http_get(tls, name, path, timeout)
        except (ssl.SSLError, OSError) as e:
            obs.handshake_error = _describe(e)
            obs.alert = e.reason if isinstance(e, ssl.SSLError) and "ALERT" in (e.reason or "") else None
    chain_ders, names = messages_to_facts(messages)
    if chain_ders is not None:
        obs.server_chain = [x509.load_der_x509_certificate(d) for d in chain_ders]
    obs.client_auth_requested = names is not None
    obs.acceptable_ca_names = names or []

    if ca_file and obs.server_chain:
        obs.verified, obs.verify_code, obs.verify_message = _verify(host, port, sni, ca_file, timeout)
    return obs


def _unverified_chain(tls):
    """The peer's certificates as sent: public on Python 3.13, on the private _ssl object since 3.10."""
    for owner in (tls, getattr(tls, "_sslobj", None)):
        get = getattr(owner, "get_unverified_chain", None)
        if get is not None:
            chain = get() or []
            return [x509.load_der_x509_certificate(c if isinstance(c, bytes) else c.public_bytes(ssl.ENCODING_DER))
                    for c in chain]
    leaf = tls.getpeercert(binary_form=True)
    return [x509.load_der_x509_certificate(leaf)] if leaf else []


def _verify(host, port, sni, ca_file, timeout):
    """(verified, OpenSSL error code, message) from a second handshake that verifies the chain."""
    ctx = _context(cafile=ca_file)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni):
            return True, 0, "ok"
    except ssl.SSLCertVerificationError as e:
        return False, e.verify_code, e.verify_message
    except (ssl.SSLError, OSError) as e:
        return None, None, f"the verifying handshake failed: {_describe(e)}"


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ProbeError(f"cannot read {path}: {e.strerror}") from None


def revoked_from_index(pki_dir):
    """{serial int: where} of the certificates the store's index marks revoked."""
    path = f"{pki_dir.rstrip('/')}/index.json"
    try:
        data = json.loads(_read(path))
    except ValueError:
        raise ProbeError(f"{path} is not valid JSON") from None
    return {int(r["serial"], 16): f"revoked in {path} on {r.get('revoked_at') or 'an unknown date'}"
            for r in data.get("issued", []) if r.get("status") == "revoked"}


def report(obs, now=None):
    """The module result: facts, then the diagnosis."""
    now = now or utcnow()
    diagnosis = diagnose(obs, now)
    return {
        "host": obs.host, "port": obs.port, "name": obs.name,
        "reachable": obs.connect_error is None, "error": obs.connect_error or obs.handshake_error,
        "protocol": obs.protocol, "cipher": obs.cipher,
        "certificate_count": len(obs.server_chain),
        "certificates": [facts(c, now) for c in obs.server_chain],
        "verified": obs.verified, "verify_code": obs.verify_code, "verify_message": obs.verify_message,
        "client_auth_requested": obs.client_auth_requested,
        "acceptable_ca_names": [name_from_der(n) for n in obs.acceptable_ca_names],
        "client_certificate": facts(obs.client_chain[0], now) if obs.client_chain else None,
        "client_chain_depth": client_depth(obs.client_chain) if obs.client_chain else None,
        "http_status": obs.http_status, "http_reason": obs.http_reason,
        "diagnosis": diagnosis, "ok": not diagnosis,
    }
