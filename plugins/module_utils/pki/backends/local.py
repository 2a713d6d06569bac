"""The local backend: CAs, their keys and the issuance record in the store (files, flock, index)."""

import os

from .. import build, crl as crl_mod, ensure_ca as ensure_ca_mod, issuance, pem
from ..authority import Authority
from .base import Backend


class LocalBackend(Backend):
    name = "local"

    def __init__(self, store):
        self.store = store

    def ensure_ca(self, spec, passphrase=None, issuer_passphrase=None, force=False, check=False, now=None):
        return ensure_ca_mod.ensure_ca(self.store, spec, passphrase, issuer_passphrase, force, check, now)

    def issuer(self, name, passphrase=None):
        return Authority(self.store, name, passphrase)

    def sign_many(self, issuer, requests, index, now, on_signed=None):
        """Signed here with the issuer's key; serials random and never reused for the issuer (index and batch)."""
        out, taken = [], set()
        for req in requests:
            not_before, not_after, _clipped = issuance.validity(now, req.spec.valid_days, issuer.cert)
            serial = issuance.serial(index, issuer.name)
            while serial in taken:
                serial = issuance.serial(index, issuer.name)
            taken.add(serial)
            out.append(build.leaf_certificate(req.spec, req.public_key, issuer.cert, issuer.key, serial,
                                              not_before, not_after, issuer.name))
        return out

    def revoke(self, names=(), serials=(), reason="unspecified", cas=(), check=False, **crl_options):
        return crl_mod.revoke(self.store, names, serials, reason, cas, check=check, **crl_options)

    def crl(self, ca_name):
        return self.store.read(self.store.ca_path(ca_name, "crl.pem"))

    def list_issued(self, ca_names=None):
        """The current certificate of every CA and leaf in the store (the report's rows)."""
        revoked = {r["serial"] for r in self.store.load_index().records if r.get("status") == "revoked"}
        out = []
        for kind, base in (("ca", os.path.join(self.store.root, "ca")),
                           ("leaf", os.path.join(self.store.root, "certs"))):
            for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
                path = os.path.join(base, name, "cert.pem")
                data = self.store.read(path)
                if data is None:
                    continue
                cert = pem.load_cert(data, path)
                out.append({"name": name, "kind": kind, "cert": cert, "serial": pem.serial_hex(cert),
                            "revoked": pem.serial_hex(cert) in revoked})
        return out
