"""What was observed in a probe, and what it means (pure): ``diagnose`` turns the facts into ``{code, message}``
items, each a plain sentence that names the cause and the fix."""

import ipaddress
from dataclasses import dataclass, field

from ..cryptography_dep import record_missing

try:
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from .certs import der, ekus, is_ca, iso, name_text, not_after, not_before, self_signed, san, utcnow
from .handshake import name_from_der

NGINX_NO_CERT = "No required SSL certificate was sent"
NGINX_CERT_ERROR = "The SSL certificate error"
NGINX_DEFAULT_DEPTH = 1


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
    chain_partial: bool = False  # only the leaf of the chain could be read (Python < 3.10 without the handshake)
    verified: bool = None  # None: no CA file given
    verify_code: int = None
    verify_message: str = None
    anchors: list = field(default_factory=list)
    client_auth_requested: bool = False  # None: unknown, this Python cannot see the handshake (handshake_hidden)
    handshake_hidden: str = None  # why the handshake messages (CertificateRequest, CA names) cannot be seen
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
    if len(chain) == 1 and not obs.chain_partial and not self_signed(leaf) and der(leaf.issuer) not in anchor_subjects and obs.verified is not True:
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
        ip = ip_or_none(name)
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


def ip_or_none(text):
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
    if obs.client_auth_requested is None:
        if obs.expect_client_auth:
            found.append(problem("client_auth_unknown",
                                 f"cannot tell whether the server asks for a client certificate, nor which CAs it "
                                 f"accepts: {obs.handshake_hidden or 'the handshake messages are not visible here'}; "
                                 f"run the probe with Python 3.8 or later (e.g. on the control node, "
                                 f"delegate_to: localhost)"))
    elif obs.expect_client_auth and not obs.client_auth_requested:
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
