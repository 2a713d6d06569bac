"""An issuing CA loaded from the store: its certificate, the chain above it and (lazily) its key."""

import os

from . import keys, names, pem
from .backends.base import Issuer
from .errors import PkiError


class Authority(Issuer):
    """An ``Issuer`` of the store, with its key."""

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
        """Refuse to issue from an expired or not yet valid CA (or one whose chain is), or with a wrong passphrase."""
        super().require_usable(now)
        self.key  # noqa: B018 - fail early on a wrong passphrase, before any work
