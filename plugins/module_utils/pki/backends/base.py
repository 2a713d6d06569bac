"""The seam between the modules and where the CA lives: one small interface, two implementations.

``local.LocalBackend`` keeps the CAs in the store (files, flock, index); ``openbao.OpenBaoBackend`` keeps
them in OpenBao's (or Vault's) PKI engine, with the store as a cache of what the roles copy to hosts.
Everything above the seam (renewal policy, reasons, results, roles, probe, report) is shared.
"""

from dataclasses import dataclass

from ...cryptography_dep import record_missing

from .. import pem
from ..errors import PkiError

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()


@dataclass
class SignRequest:
    """One leaf to certify: what the inventory says (``spec``) for ``public_key``; ``csr_pem`` when a host
    made the key (the host's CSR), ``key`` when the controller did (a backend that signs CSRs only makes one)."""
    spec: object
    public_key: object
    csr_pem: object = None
    key: object = None


@dataclass
class Signed:
    """A certificate a backend signed, with what it already read from it (so no one parses or encodes it again):
    ``pem`` its PEM (as ``pem.to_pem`` makes it), ``facts`` as ``pem.facts``, ``san`` as ``pem.san``."""
    cert: object
    pem: bytes
    facts: dict
    san: set


class SignError(Exception):
    """One request of a batch that was not signed: ``maybe_issued`` when a certificate may exist anyway."""

    def __init__(self, message, code="sign_failed", maybe_issued=False):
        super().__init__(message)
        self.code, self.maybe_issued = code, maybe_issued


class Issuer:
    """An issuing CA as renewal and the chain files see it: its certificate and the CAs above it."""

    def __init__(self, name, cert, above):
        self.name, self.cert, self.above = name, cert, list(above)

    @property
    def is_root(self):
        return not self.above

    @property
    def root(self):
        return self.above[-1] if self.above else self.cert

    @property
    def intermediates(self):
        """This CA and those above it, without the root: what a leaf's chain.pem holds."""
        return [] if self.is_root else [self.cert] + self.above[:-1]

    @property
    def fullchain(self):
        """This CA then every CA above it up to the root."""
        return [self.cert] + self.above

    @property
    def path_length(self):
        return self.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length

    def require_usable(self, now):
        """Refuse to issue from an expired or not yet valid CA (or one whose chain is)."""
        for cert in self.fullchain:
            who = "issuer" if cert is self.cert else "a CA above issuer"
            if cert.not_valid_after_utc <= now:
                raise PkiError(f"{who} {self.name!r} cannot issue: {cert.subject.rfc4514_string()} expired on "
                               f"{pem.iso(cert.not_valid_after_utc)}; renew that CA first", "issuer_expired")
            if cert.not_valid_before_utc > now:
                raise PkiError(f"{who} {self.name!r} cannot issue: {cert.subject.rfc4514_string()} is not valid "
                               f"before {pem.iso(cert.not_valid_before_utc)}", "issuer_not_yet_valid")


class Backend:
    """What the modules need from a CA backend."""

    name = None

    def ensure_ca(self, spec, passphrase=None, issuer_passphrase=None, force=False, check=False, now=None):
        """Issue, renew or leave alone one CA; a result dict (action, reasons, facts, paths)."""
        raise NotImplementedError

    def issuer(self, name, passphrase=None):
        """The issuing CA ``name``, an ``Issuer`` (PkiError code ``no_issuer`` when it does not exist)."""
        raise NotImplementedError

    def refuse_unsupported(self, specs):
        """Raise ``PkiError`` (code ``unsupported``) for a leaf spec this backend cannot sign: called for a run's
        whole list before anything is signed, as a run may sign in chunks."""

    def sign_many(self, issuer, requests, index, now, on_signed=None):
        """Certify every ``SignRequest``; one x509 certificate (or a ``Signed``) or ``SignError`` per request, in order.
        ``index`` is the store's issuance record, for serials never reused (records are added by the caller).
        A backend that waits for answers may call ``on_signed(i, result)`` (from any thread, never raising) as soon
        as request i's result is known, so the caller can write it while the rest is signed."""
        raise NotImplementedError

    def revoke(self, names=(), serials=(), reason="unspecified", cas=(), check=False, **crl_options):
        """Revoke by name and/or serial and make each CA's CRL current: {changed, revoked, crls, crl_files}."""
        raise NotImplementedError

    def crl(self, ca_name):
        """The current CRL of CA ``ca_name`` (PEM bytes)."""
        raise NotImplementedError

    def list_issued(self, ca_names=None):
        """Every certificate the CAs issued: [{serial, name, kind, issuer, cert, revoked}]."""
        raise NotImplementedError
