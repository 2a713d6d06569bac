"""What a host that keeps its own key reports, and what the control node takes from it.

The control node takes exactly one thing from a certificate signing request: the public key, once the
request's signature proves the host holds the matching private key. Every name, extension and key usage
the request asks for is ignored: the certificate says what the inventory says (``LeafSpec``).
"""

from dataclasses import dataclass

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import keys, pem
from .errors import PkiError


@dataclass(frozen=True)
class HostReport:
    """A host's key (as the public key of its CSR) and the certificate it holds now."""
    public_key: object
    held: object = None  # x509.Certificate installed on the host; None when it has none
    held_unreadable: bool = False
    rotating: bool = False  # the CSR is for a new key that is to replace the one in use
    csr_pem: bytes = None  # the CSR itself, for a backend that signs CSRs (OpenBao)


def host_report(name, csr_pem, held_pem=None, rotating=False, check=False):
    """A ``HostReport`` from what the host sent for certificate ``name`` (PEM text or bytes). In check mode
    a host whose key is not made yet sends no CSR: the report then has no public key."""
    what = f"certificate {name!r}"
    if not csr_pem and check:
        return HostReport(None, *_held(held_pem, what), bool(rotating))
    if not csr_pem:
        raise PkiError(f"{what} has key_location host but no CSR: the host's key task must run first "
                       f"(mtls.rollout.host_key) and its csr be passed as 'csr'", "no_csr")
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        request = x509.load_pem_x509_csr(data)
    except ValueError:
        raise PkiError(f"the CSR for {what} is not a readable PEM certificate request (corrupted or truncated)",
                       "bad_csr") from None
    if not request.is_signature_valid:
        raise PkiError(f"the CSR for {what} has a signature that does not verify: it was not made with the key it "
                       f"carries (corrupted or forged); nothing was signed", "bad_csr")
    public_key = request.public_key()
    try:
        spec = keys.spec_of(public_key)
        keys.key_spec(spec.type, spec.size or None, spec.curve or None)
    except PkiError as e:
        raise PkiError(f"the CSR for {what} carries an unusable key: {e}", "bad_csr") from None
    held, unreadable = _held(held_pem, what)
    return HostReport(public_key, held, unreadable, bool(rotating), data)


def _held(held_pem, what):
    """(certificate, unreadable): the first certificate of what the host holds (a fullchain is fine)."""
    if not held_pem:
        return None, False
    try:
        blocks = pem.load_certs(held_pem.encode() if isinstance(held_pem, str) else held_pem, what)
    except PkiError:
        return None, True
    return (blocks[0], False) if blocks else (None, True)
