"""One private key per leaf: find a leaf of the store whose certificate already holds a given key."""

import os

from . import keys, pem
from .errors import PkiError


class Holders:
    """Public key -> names of the leaves whose certificates in the store carry it, read once per run and only
    when first asked (a run that issues nothing reads nothing)."""

    def __init__(self, store):
        self.store, self._by_key = store, None

    def add(self, name, key):
        """``key`` is certified for ``name`` in this run (two hosts cloned from one image show up here)."""
        self._load().setdefault(keys.public_der(key), []).append(name)

    def holder(self, name, key):
        """The name of another leaf whose certificate certifies ``key`` (a copied key file), or None."""
        return next((n for n in self._load().get(keys.public_der(key), ()) if n != name), None)

    def _load(self):
        if self._by_key is None:
            self._by_key = {}
            base = os.path.join(self.store.root, "certs")
            for other in sorted(os.listdir(base)) if os.path.isdir(base) else []:
                data = self.store.read(self.store.leaf_path(other, "cert.pem"))
                try:
                    cert = pem.load_cert(data, other) if data is not None else None
                except PkiError:
                    continue
                if cert is not None:
                    self._by_key.setdefault(keys.public_der(cert.public_key()), []).append(other)
        return self._by_key
