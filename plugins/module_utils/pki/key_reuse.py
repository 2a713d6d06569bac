"""One private key per leaf: find a leaf of the store whose certificate already holds a given key."""

import os

from . import keys, pem
from .errors import PkiError


def holder(store, name, key):
    """The name of another leaf whose certificate certifies ``key`` (a copied key file), or None."""
    public = keys.public_der(key)
    base = os.path.join(store.root, "certs")
    for other in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if other == name:
            continue
        data = store.read(store.leaf_path(other, "cert.pem"))
        try:
            cert = pem.load_cert(data, other) if data is not None else None
        except PkiError:
            continue
        if cert is not None and keys.public_der(cert.public_key()) == public:
            return other
    return None
