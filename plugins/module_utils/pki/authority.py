"""An issuing CA loaded from the store: its certificate, the chain above it and (lazily) its key."""

import os

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from . import keys, names, pem
from .errors import PkiError


class Authority:
    def __init__(self, store, name, passphrase=None):
        names.store_name(name, "issuer")  # a CA of this store, never a path to another one
        self.store, self.name, self._passphrase, self._key = store, name, passphrase, None
        cert_path = store.ca_path(name, "cert.pem")
        data = store.read(cert_path)
        if data is None:
            if os.path.exists(store.leaf_path(name, "cert.pem")):
                raise PkiError(f"issuer {name!r} is not a CA: it is a leaf certificate in "
                               f"{store.leaf_path(name)}; name a CA created with mtls.rollout.ca", "not_a_ca")
            known = sorted(os.listdir(os.path.join(store.root, "ca"))) if os.path.isdir(
                os.path.join(store.root, "ca")) else []
            raise PkiError(f"issuer {name!r} does not exist in {store.root}: create it with mtls.rollout.ca first"
                           + (f" (existing CAs: {', '.join(known)})" if known else ""), "no_issuer")
        self.cert = pem.load_cert(data, cert_path)
        if not pem.is_ca(self.cert):
            raise PkiError(f"issuer {name!r} is not a CA: {cert_path} lacks basicConstraints CA:TRUE", "not_a_ca")
        self.above = pem.load_certs(store.read(store.ca_path(name, "chain.pem")), store.ca_path(name, "chain.pem"))
        link = self.cert
        for parent in self.above:
            if link.issuer != parent.subject:
                raise PkiError(f"{store.ca_path(name, 'chain.pem')} does not chain up from CA {name!r}: run "
                               f"mtls.rollout.ca for {name!r} to rewrite it", "corrupt")
            link = parent

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

    @property
    def key(self):
        if self._key is None:
            path = self.store.ca_path(self.name, "key.pem")
            data = self.store.read(path)
            if data is None:
                raise PkiError(f"the key of issuer {self.name!r} ({path}) is missing: restore it from a backup",
                               "no_issuer_key")
            self._key = keys.from_pem(data, path, self._passphrase)
            if keys.public_der(self._key) != keys.public_der(self.cert.public_key()):
                raise PkiError(f"{path} does not match the certificate of CA {self.name!r}", "key_mismatch")
        return self._key

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
        self.key  # noqa: B018 - fail early on a wrong passphrase, before any work
