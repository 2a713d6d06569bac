"""The network part of the probe (standard library ``ssl`` only): one handshake that verifies nothing, with the
client certificate when given, and an HTTP GET over it; a second handshake that verifies the server against
``ca_file`` with OpenSSL, for its verdict and error code. ``report`` shapes the module result."""

import json
import platform
import re
import socket
import ssl

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from .certs import ProbeError, der, utc_time, facts, iso, load_pem_certs, load_pem_crls, name_text, utcnow
from .diagnosis import Observation, ip_or_none, client_depth, diagnose
from .handshake import HANDSHAKE, messages_to_facts, name_from_der


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
                                                    f"{iso(utc_time(entry, 'revocation_date'))}")
    if revoked_serials is not None:
        obs.revocation_checked = True
        for serial, where in revoked_serials.items():
            obs.revoked.setdefault(serial, where)
    sni = None if ip_or_none(name) is not None else name

    messages = []
    ctx = _context(messages, certfile=client_cert, keyfile=client_key, password=client_key_password)
    if not hasattr(ctx, "_msg_callback"):  # Python < 3.8: the handshake messages cannot be seen
        obs.handshake_hidden = (f"Python {platform.python_version()} has no ssl.SSLContext._msg_callback (3.8 added "
                                f"it), so the probe cannot see the server's CertificateRequest")
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
                    obs.server_chain, obs.chain_partial = _unverified_chain(tls)
                if http:
                    obs.http_status, obs.http_reason, _body = _http_get(tls, name, path, timeout)
        except (ssl.SSLError, OSError) as e:
            obs.handshake_error = _describe(e)
            obs.alert = e.reason if isinstance(e, ssl.SSLError) and "ALERT" in (e.reason or "") else None
    chain_ders, names = messages_to_facts(messages)
    if chain_ders is not None:
        obs.server_chain = [x509.load_der_x509_certificate(d) for d in chain_ders]
    obs.client_auth_requested = None if obs.handshake_hidden else names is not None
    obs.acceptable_ca_names = names or []

    if ca_file and obs.server_chain:
        obs.verified, obs.verify_code, obs.verify_message = _verify(host, port, sni, ca_file, timeout)
    return obs


def _unverified_chain(tls):
    """(the peer's certificates as sent, whether only the leaf could be read): the chain is public on Python
    3.13, on the private _ssl object since 3.10; before that only the leaf can be read."""
    for owner in (tls, getattr(tls, "_sslobj", None)):
        get = getattr(owner, "get_unverified_chain", None)
        if get is not None:
            chain = get() or []
            return [x509.load_der_x509_certificate(c if isinstance(c, bytes) else ssl.PEM_cert_to_DER_cert(c.public_bytes()))
                    for c in chain], False
    leaf = tls.getpeercert(binary_form=True)
    return ([x509.load_der_x509_certificate(leaf)] if leaf else []), True


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
