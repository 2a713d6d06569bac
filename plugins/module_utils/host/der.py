"""Just enough DER to read keys out of certificates and CSRs on a host without the cryptography library.

Runs on managed hosts (stdlib only, Python 3.6+). Reads the SubjectPublicKeyInfo of a certificate or a
certificate request and says which kind of key it holds (EC curve, RSA size, Ed25519), and the facts that order
two certificates of one lineage (``certificate_facts``: serial, issuer, validity, authority key identifier).
"""

import base64
import datetime
import re

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.+?)\s*-----END \1-----", re.S)
CURVES = {"1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384", "1.3.132.0.35": "P-521"}
EC, RSA, ED25519 = "1.2.840.10045.2.1", "1.2.840.113549.1.1.1", "1.3.101.112"


class DerError(ValueError):
    pass


def pem_blocks(text, label):
    """The DER of every PEM block of type ``label`` (e.g. 'CERTIFICATE') in ``text``, in order."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    out = []
    for kind, body in _PEM.findall(text or ""):
        if kind == label:
            try:
                out.append(base64.b64decode("".join(body.split()), validate=True))
            except (ValueError, TypeError):
                raise DerError(f"a PEM {label} block is not valid base64") from None
    return out


def to_pem(der, label):
    body = base64.b64encode(der).decode()
    return f"-----BEGIN {label}-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + \
        f"\n-----END {label}-----\n"


def tlv(data, pos=0):
    """(tag, content start, content end) of the element at ``pos``."""
    try:
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if not 0 < n <= 4:
                raise DerError("unsupported DER length")
            length = int.from_bytes(data[pos:pos + n], "big")
            pos += n
    except IndexError:
        raise DerError("truncated DER") from None
    if pos + length > len(data):
        raise DerError("truncated DER")
    return tag, pos, pos + length


def children(data, start, end):
    """(tag, element start, content start, end) of each element between ``start`` and ``end``."""
    out, pos = [], start
    while pos < end:
        tag, s, e = tlv(data, pos)
        out.append((tag, pos, s, e))
        pos = e
    return out


def oid(content):
    parts, value = [], 0
    for b in content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        raise DerError("empty OID")
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first] + parts[1:])


def _signed_part(data):
    """The fields of the to-be-signed part of a signed structure (certificate, CSR)."""
    _tag, s, e = tlv(data)
    _tag, _at, s, e = children(data, s, e)[0]
    return children(data, s, e)


def certificate_spki(cert_der):
    """tbsCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo."""
    fields = _signed_part(cert_der)
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    _tag, at, _s, e = fields[5]
    return bytes(cert_der[at:e])


def _time(data, tag, s, e):
    """A UTCTime (0x17) or GeneralizedTime (0x18) as an aware UTC datetime."""
    text = bytes(data[s:e]).decode("ascii", "replace")
    try:
        if tag == 0x17:  # RFC 5280: YY >= 50 is 19YY, else 20YY
            text = ("19" if text[:2] >= "50" else "20") + text
        if tag in (0x17, 0x18):
            when = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise ValueError(text)
    except ValueError:
        raise DerError(f"a certificate's validity time {text!r} is not a UTCTime or GeneralizedTime") from None
    return when.replace(tzinfo=datetime.timezone.utc)


AKI = "2.5.29.35"


def certificate_facts(cert_der):
    """{serial (lowercase hex, as the engine writes it), issuer (its DER), not_before, not_after (aware UTC),
    spki (DER), aki (the authority key identifier extension's value, or None)} of a certificate."""
    fields = _signed_part(cert_der)
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    if len(fields) < 6:
        raise DerError("not a certificate (too few fields)")
    (_t, _a, s, e), (_t2, issuer_at, _s2, issuer_end) = fields[0], fields[2]
    validity = children(cert_der, fields[3][2], fields[3][3])
    if len(validity) != 2:
        raise DerError("not a certificate (bad validity)")
    aki = None
    for tag, _at, s3, e3 in fields[6:]:
        if tag != 0xA3:  # [3] extensions
            continue
        _tag, s4, e4 = tlv(cert_der, s3)
        for _xt, _xa, xs, xe in children(cert_der, s4, e4):
            parts = children(cert_der, xs, xe)
            if parts and parts[0][0] == 0x06 and oid(cert_der[parts[0][2]:parts[0][3]]) == AKI:
                aki = bytes(cert_der[parts[-1][2]:parts[-1][3]])
    return {"serial": format(int.from_bytes(bytes(cert_der[s:e]), "big"), "x"),
            "issuer": bytes(cert_der[issuer_at:issuer_end]),
            "not_before": _time(cert_der, validity[0][0], validity[0][2], validity[0][3]),
            "not_after": _time(cert_der, validity[1][0], validity[1][2], validity[1][3]),
            "spki": bytes(cert_der[fields[5][1]:fields[5][3]]), "aki": aki}


def csr_spki(csr_der):
    """certificationRequestInfo: version, subject, subjectPKInfo, [0] attributes."""
    _tag, at, _s, e = _signed_part(csr_der)[2]
    return bytes(csr_der[at:e])


def key_kind(spki):
    """('ec', 'P-256') / ('rsa', 3072) / ('ed25519', None) for a SubjectPublicKeyInfo DER."""
    _tag, s, e = tlv(spki)
    (_atag, _aat, a_s, a_e), (_btag, _bat, b_s, b_e) = children(spki, s, e)[:2]
    alg = children(spki, a_s, a_e)
    algorithm = oid(spki[alg[0][2]:alg[0][3]])
    if algorithm == EC:
        curve = oid(spki[alg[1][2]:alg[1][3]]) if len(alg) > 1 and alg[1][0] == 0x06 else ""
        return "ec", CURVES.get(curve, curve or "explicit parameters")
    if algorithm == RSA:
        bits = spki[b_s + 1:b_e]  # skip the BIT STRING's unused-bits byte
        _tag, s, e = tlv(bits)
        _mtag, _mat, m_s, m_e = children(bits, s, e)[0]
        return "rsa", int.from_bytes(bits[m_s:m_e], "big").bit_length()
    if algorithm == ED25519:
        return "ed25519", None
    return algorithm, None
