"""TLS handshake messages (pure): the server's Certificate and CertificateRequest messages, as OpenSSL hands
them to the message callback of Python's ``ssl`` (decrypted under TLS 1.3 too). They give the certificate list
exactly as sent (``ssl`` has no public way to read it before 3.13) and the acceptable client CA names (no way
at all in ``ssl``)."""

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from ..host.der import oid as _oid

HANDSHAKE = 22
CERTIFICATE, CERTIFICATE_REQUEST = 11, 13
EXT_CERTIFICATE_AUTHORITIES = 47
TLS13 = 0x0304


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
        return parse_name(name_der).rfc4514_string()
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
