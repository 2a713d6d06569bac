"""Certificate construction: extensions per role (CA, server, client) and the signature hash."""

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()


def ekus(profile):
    """The extended key usages of a profile: server, client or both."""
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return {"server": [server], "client": [client], "both": [server, client]}[profile]


def signature_hash(issuer_key):
    """The hash that matches the issuer key's strength (none for Ed25519)."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.key_size > 256:
        return hashes.SHA384() if issuer_key.curve.key_size == 384 else hashes.SHA512()
    return hashes.SHA256()


def key_usage(digital_signature=False, key_encipherment=False, cert_sign=False):
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _base(subject, public_key, issuer_cert, serial, not_before, not_after):
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(public_key)
               .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if issuer_cert is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    else:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return builder.add_extension(aki, critical=False)


def _revocation_urls(builder, base, issuer_name):
    """CRL distribution point <base><issuer>.crl and AIA caIssuers <base><issuer>.crt (DER files over HTTP,
    RFC 5280 4.2.1.13 and 4.2.2.1), so clients can find the CRL and the issuer; nothing when base is empty."""
    if not base or not issuer_name:
        return builder
    crl = x509.UniformResourceIdentifier(f"{base}{issuer_name}.crl")
    ca = x509.UniformResourceIdentifier(f"{base}{issuer_name}.crt")
    return (builder
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint([crl], None, None, None)]), critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, ca)]), critical=False))


def revocation_base(cert):
    """The base URL of the certificate's CRL distribution point (what a spec's crl_url is), or ''."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return ""
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value.rsplit("/", 1)[0] + "/"
    return ""


def ca_certificate(spec, public_key, issuer_cert, issuer_key, serial, not_before, not_after):
    """A root (issuer_cert None, issuer_key = own key) or an intermediate CA certificate."""
    builder = (_base(spec.subject.to_x509(), public_key, issuer_cert, serial, not_before, not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=spec.path_length), critical=True)
               .add_extension(key_usage(cert_sign=True), critical=True))
    if spec.name_constraints:
        builder = builder.add_extension(spec.name_constraints.to_x509(), critical=spec.name_constraints.critical)
    builder = _revocation_urls(builder, spec.crl_url, spec.issuer)  # a root has no issuer to point at
    return builder.sign(issuer_key, signature_hash(issuer_key))


def leaf_certificate(spec, public_key, issuer_cert, issuer_key, serial, not_before, not_after, issuer_name=None):
    """A server, client or dual-purpose end-entity certificate (issuer_name: the CA's name in the store, for
    the revocation URLs of spec.crl_url)."""
    subject = spec.subject.to_x509()
    rsa_kex = isinstance(public_key, rsa.RSAPublicKey) and spec.profile in ("server", "both")
    builder = (_base(subject, public_key, issuer_cert, serial, not_before, not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(key_usage(digital_signature=True, key_encipherment=rsa_kex), critical=True)
               .add_extension(x509.ExtendedKeyUsage(ekus(spec.profile)), critical=False))
    san = ([x509.DNSName(d) for d in spec.dns] + [x509.IPAddress(i) for i in spec.ip]
           + [x509.RFC822Name(e) for e in spec.email])
    if san:
        # RFC 5280 4.2.1.6: critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=not len(subject))
    builder = _revocation_urls(builder, spec.crl_url, issuer_name)
    return builder.sign(issuer_key, signature_hash(issuer_key))
