"""Verify a certificate for a purpose, as a TLS peer would, and explain every problem found.

Path building and validation use ``cryptography.x509.verification``. Its web-PKI policy does not accept
Ed25519; chains with Ed25519 keys are checked link by link (signature, validity, CA flag) instead, and
the result says so.
"""

import ipaddress

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509 import verification as xv
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import keys, names, pem


def _purpose_eku(purpose):
    return {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}[purpose]


def problem(code, message):
    return {"code": code, "message": message}


def verify(cert, purpose, anchors, intermediates=(), hostname=None, ip=None, key=None, min_days=None,
           now=None):
    """Returns {valid, chain, depth, not_after, days_remaining, problems, method}; ``key`` is a private key."""
    now = now or pem.utcnow()
    hostname = names.dns_name(hostname, allow_wildcard=False) if hostname else None  # 'WEB.Example.com.' too
    problems = _leaf_problems(cert, purpose, hostname, ip, key, min_days, now)
    chain, method = [], "cryptography.x509.verification"
    if not anchors:
        problems.append(problem("no_trust_anchor", "no trust anchor given: pass the root CA (ca_file) that "
                                                   "should have issued this chain"))
    elif _uses_ed25519([cert, *intermediates, *anchors]):
        method = "link-by-link (Ed25519 is outside the web-PKI policy of cryptography's verifier)"
        chain, err = _linkwise(cert, intermediates, anchors, now)
        if err:
            problems.append(err)
    else:
        chain, err = _webpki(cert, purpose, anchors, intermediates, hostname, ip, now)
        if err and not any(p["code"] in ("expired", "not_yet_valid", "wrong_purpose", "name_mismatch", "ip_mismatch")
                           for p in problems):
            problems.append(err)
    return {"valid": not problems, "chain": [c.subject.rfc4514_string() for c in chain],
            "depth": max(len(chain) - 2, 0), "not_after": pem.iso(cert.not_valid_after_utc),
            "days_remaining": round(pem.days_left(cert, now), 2), "problems": problems, "method": method,
            "serial": pem.serial_hex(cert), "subject": cert.subject.rfc4514_string(),
            "fingerprint_sha256": pem.fingerprint(cert)}


def _leaf_problems(cert, purpose, hostname, ip, key, min_days, now):
    found = []
    if cert.not_valid_after_utc <= now:
        ago = (now - cert.not_valid_after_utc).days
        found.append(problem("expired", f"the certificate expired on {pem.iso(cert.not_valid_after_utc)} "
                                        f"({ago} days ago): renew it"))
    elif cert.not_valid_before_utc > now:
        found.append(problem("not_yet_valid", f"the certificate is not valid before "
                                              f"{pem.iso(cert.not_valid_before_utc)}: check the clocks of the "
                                              f"issuing machine and of this one"))
    ekus = pem.ekus(cert)
    if pem.is_ca(cert):
        found.append(problem("is_ca", "this is a CA certificate, not an end-entity certificate"))
    elif ekus and _purpose_eku(purpose) not in ekus:
        have = ", ".join(sorted(e._name for e in ekus))
        found.append(problem("wrong_purpose", f"the certificate is not for {purpose} authentication (its extended "
                                              f"key usage is {have}): issue it with profile '{purpose}' or 'both'"))
    names = pem.san(cert)
    if hostname and not any(k == "dns" and _dns_match(v, hostname.lower().rstrip(".")) for k, v in names):
        listed = ", ".join(sorted(v for _kind, v in names)) or "none"
        found.append(problem("name_mismatch", f"{hostname} is not in the certificate's subject alternative names "
                                              f"({listed}): add it to the SAN (dns) and re-issue"))
    if ip:
        address = ipaddress.ip_address(ip)
        if ("ip", str(address)) not in names:
            listed = ", ".join(sorted(v for _kind, v in names)) or "none"
            found.append(problem("ip_mismatch", f"IP address {address} is not in the certificate's subject "
                                                f"alternative names ({listed}): access by IP needs the address "
                                                f"in the SAN (ip) - add it and re-issue"))
    if key is not None and keys.public_der(key) != keys.public_der(cert.public_key()):
        found.append(problem("key_mismatch", "the private key does not belong to this certificate (their public "
                                             "keys differ): deploy the matching key or re-issue"))
    left = pem.days_left(cert, now)
    if min_days is not None and 0 < left < min_days:
        found.append(problem("expires_soon", f"only {left:.1f} days of validity remain, fewer than the "
                                             f"{min_days:g} required: renew it"))
    return found


def _dns_match(pattern, name):
    if pattern.startswith("*."):
        head, _dot, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def _uses_ed25519(certs):
    return any(isinstance(c.public_key(), ed25519.Ed25519PublicKey) for c in certs)


def _webpki(cert, purpose, anchors, intermediates, hostname, ip, now):
    builder = xv.PolicyBuilder().store(xv.Store(list(anchors))).time(now)
    try:
        if purpose == "server":
            subject = xv.IPAddress(ipaddress.ip_address(ip)) if ip else xv.DNSName(hostname) if hostname else None
            if subject is None:  # no name to check: any of the certificate's own names will do
                subject = _any_subject(cert)
            chain = builder.build_server_verifier(subject).verify(cert, list(intermediates))
        else:
            ee = xv.ExtensionPolicy.webpki_defaults_ee().may_be_present(
                x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None)
            builder = builder.extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
            chain = builder.build_client_verifier().verify(cert, list(intermediates)).chain
        return chain, None
    except xv.VerificationError as e:
        return [], _explain(str(e), cert, anchors, intermediates, now)


def _any_subject(cert):
    for kind, value in sorted(pem.san(cert)):
        if kind == "dns":
            return xv.DNSName("x" + value[1:] if value.startswith("*.") else value)  # a name the wildcard covers
        if kind == "ip":
            return xv.IPAddress(ipaddress.ip_address(value))
    return xv.DNSName("invalid.invalid")


def _explain(message, cert, anchors, intermediates, now):
    for ca in intermediates:
        if ca.not_valid_after_utc <= now:
            return problem("chain_expired", f"the intermediate {ca.subject.rfc4514_string()} expired on "
                                            f"{pem.iso(ca.not_valid_after_utc)}: renew it and redeploy the chain")
    if "candidates exhausted" in message or "no issuer" in message.lower():
        orphan = _unsigned_link(cert, anchors, intermediates)
        if orphan is not None:
            return problem("untrusted", f"no chain to a trust anchor: the issuer {orphan.issuer.rfc4514_string()} "
                                        f"of {orphan.subject.rfc4514_string()} is neither a trusted CA nor among the "
                                        f"intermediates given (a missing intermediate, or the wrong CA file, perhaps "
                                        f"another CA of the same name) - detail: {message}")
    return problem("invalid", f"the chain does not verify: {message}")


def _unsigned_link(cert, anchors, intermediates):
    """The first certificate walking up from ``cert`` that no given CA signed, or None if a path reaches an anchor."""
    pool, current = [*intermediates, *anchors], cert
    for _step in range(10):
        if current in anchors:
            return None
        parent = next((c for c in pool if c.subject == current.issuer and c != current and signed_by(current, c)), None)
        if parent is None:
            return current
        current = parent
    return None


def signed_by(cert, ca):
    """Whether ``ca`` issued ``cert`` (names, key identifiers aside: the signature verifies with its key)."""
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def _linkwise(cert, intermediates, anchors, now):
    pool = list(intermediates) + list(anchors)
    chain, current = [cert], cert
    for _step in range(10):
        if any(current == a for a in anchors):
            return chain, None
        parent = next((c for c in pool if c.subject == current.issuer and c != current), None)
        if parent is None:
            return chain, problem("untrusted", f"no chain to a trust anchor: the issuer "
                                               f"{current.issuer.rfc4514_string()} is not among the CAs given")
        try:
            current.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as e:
            return chain, problem("bad_signature", f"{current.subject.rfc4514_string()} is not signed by "
                                                   f"{parent.subject.rfc4514_string()}: {e or type(e).__name__}")
        if not pem.is_ca(parent):
            return chain, problem("invalid", f"{parent.subject.rfc4514_string()} is not a CA")
        if not parent.not_valid_before_utc <= now < parent.not_valid_after_utc:
            return chain, problem("chain_expired", f"{parent.subject.rfc4514_string()} is outside its validity")
        chain.append(parent)
        current = parent
    return chain, problem("invalid", "the chain is longer than 10 certificates")
