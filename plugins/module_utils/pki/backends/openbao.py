"""CA operations over OpenBao's (or HashiCorp Vault's) PKI secrets engine: one mount per CA.

The mount of CA ``name`` is ``client.mount_prefix + name``. CA keys are generated inside OpenBao
(``type=internal``) and never leave it; leaf keys stay where the CSR was made.

HTTP endpoints used (all in Vault's API as well; policy paths are relative to ``/v1/``):
  sys/mounts/<mount>                  GET (does it exist), POST (enable ``pki``); sys/mounts/<mount>/tune POST
  <mount>/config/issuers              GET (the default issuer), POST (make a new issuer the default)
  <mount>/issuer/<id>                 GET (certificate, chain), PATCH (leaf_not_after_behavior=truncate)
  <mount>/root/generate/internal|existing            POST (a root; ``existing`` keeps the key)
  <mount>/intermediate/generate/internal|existing    POST (an intermediate's CSR)
  <parent>/root/sign-intermediate     POST;  <mount>/intermediate/set-signed POST
  <mount>/roles/<server|client|both>  GET, POST
  <mount>/sign/<role>                 POST (issue from a CSR)
  <mount>/revoke POST, <mount>/crl/pem GET, <mount>/certs LIST, <mount>/cert/<serial> GET
  auth/approle/login                  POST (AppRole only)

Gaps against the local backend (OpenBao 2.x): name constraints are permitted DNS domains only (always
critical); excluded DNS and IP constraints are refused with an error, not dropped. A CA subject's
emailAddress is not supported. Leaf subjects carry the common name only (a role fixes O/OU for all).
Leaf key usage is digitalSignature only (ECDHE / TLS 1.3; no RSA key transport).
"""

import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor

from ...cryptography_dep import record_missing

from .. import build, crl as crl_mod, issuance, keys, pem, renewal
from ..errors import PkiError
from ..store import KEY_MODE
from .base import Backend, Issuer, SignError, Signed
from .openbao_http import OpenBaoError

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

MAX_LEASE = "876000h"  # 100 years: a mount's max TTL must not cap a CA's own validity
SUBJECT_PARAMS = {"country": "country", "state": "province", "locality": "locality",
                  "organization": "organization", "organizational_unit": "ou"}
EC_BITS = {"P-256": 256, "P-384": 384, "P-521": 521}
PROFILE_FLAGS = {"server": (True, False), "client": (False, True), "both": (True, True)}
# profile_limits[profile] may override these, and add allowed_domains (a list) to restrict names
ROLE_DEFAULTS = {"key_type": "any", "key_bits": 0, "max_ttl_days": 3650, "ttl_days": 365}


def serial_hex(value):
    """OpenBao's '0a:1b:...' (or an int) as the local engine writes serials: lower-case hex, no colons."""
    return format(value if isinstance(value, int) else int(str(value).replace(":", "").replace("-", ""), 16), "x")


def serial_colons(serial):
    digits = serial_hex(serial)
    digits = "0" * (len(digits) % 2) + digits
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def _hours(days):
    return f"{max(1, int(round(float(days) * 24)))}h"


def _pems(text):
    return [c if c.endswith("\n") else c + "\n" for c in (c.strip() for c in text or []) if c]


class OpenBaoCA:
    """The CA operations the modules need, on top of an ``openbao_http.Client``."""

    def __init__(self, client):
        self.client = client

    # ---- CAs ------------------------------------------------------------------------------------------
    def ensure_ca(self, spec, parent_mount=None, check=False, existing_root=False, force=False, now=None):
        """Issue, renew or leave alone one CA; the result is shaped like the local engine's ensure_ca."""
        now = now or pem.utcnow()
        _supported(spec)
        mount = self.client.mount(spec.name)
        if spec.issuer and not parent_mount:
            parent_mount = self.client.mount(spec.issuer)
        parent = self._issuer(parent_mount) if parent_mount else None
        if parent_mount and parent is None:
            raise PkiError(f"parent CA mount {parent_mount!r} of CA {spec.name!r} has no CA certificate: create "
                           f"CA {spec.issuer!r} first", "no_issuer")
        mounted = self._mount_info(mount)
        if mounted is not None and mounted.get("type") != "pki":
            raise PkiError(f"mount {mount!r} for CA {spec.name!r} is a {mounted.get('type')!r} secrets engine, not "
                           f"pki: choose another mount prefix", "not_pki")
        current = self._issuer(mount) if mounted is not None else None
        cert = current["cert"] if current else None
        reasons = _reasons(spec, cert, parent, force, now)
        warnings = []
        if existing_root:
            if cert is None:
                raise PkiError(f"existing root CA {spec.name!r}: mount {mount!r} holds no CA certificate; create "
                               f"or import it in OpenBao first", "no_issuer")
            warnings += [f"existing root {spec.name!r} differs from the spec ({r}); it is not changed"
                         for r in reasons]
            reasons = []
        fix = []
        if current and not reasons and current["behavior"] != "truncate":
            fix.append("leaf_not_after_behavior")
        if mounted is not None and not reasons and _max_ttl(mounted) < 876000 * 3600:
            fix.append("max_lease_ttl")
        if existing_root and fix:
            warnings.append(f"existing root {spec.name!r}: not changing its {' and '.join(fix)} (mtls.rollout "
                            f"sets leaf_not_after_behavior=truncate and max_lease_ttl={MAX_LEASE} on CAs it manages)")
            fix = []
        if check or not (reasons or fix):
            action = _action(cert, reasons, bool(reasons or fix))
            return self._result(spec, mount, action, reasons or fix, None if reasons else current, cert, warnings)

        if mounted is None:
            try:
                self.client.write(f"sys/mounts/{mount}", {"type": "pki", "config": {"max_lease_ttl": MAX_LEASE},
                                                          "description": f"mtls.rollout CA {spec.name}"})
            except OpenBaoError as e:
                if "already in use" not in str(e):
                    raise
                # another run enabled it a moment ago: look again (CA creation itself is not serialised:
                # create a new hierarchy from one controller; later concurrent runs only read it)
                return self.ensure_ca(spec, parent_mount, check, existing_root, force, now)
        elif "max_lease_ttl" in fix or reasons:
            self.client.write(f"sys/mounts/{mount}/tune", {"max_lease_ttl": MAX_LEASE})
        if reasons:
            keep_key = current is not None and current["key_id"] and not spec.rotate_key and \
                keys.spec_of(cert.public_key()) == spec.key
            issuer_id, warning = (self._new_intermediate(spec, mount, parent_mount, parent, current, keep_key, now)
                                  if parent else self._new_root(spec, mount, current, keep_key))
            warnings += [warning] if warning else []
            self.client.write(f"{mount}/config/issuers", {"default": issuer_id})
        else:
            issuer_id = current["id"]
        self.client.patch(f"{mount}/issuer/{issuer_id}", {"leaf_not_after_behavior": "truncate"})
        return self._result(spec, mount, _action(cert, reasons, True), reasons or fix, self._issuer(mount), cert,
                            warnings)

    def _new_root(self, spec, mount, current, keep_key):
        params = {**_ca_params(spec), "ttl": _hours(spec.valid_days)}
        kind = "existing" if keep_key else "internal"
        if keep_key:
            params = {k: v for k, v in params.items() if k not in ("key_type", "key_bits")}
            params["key_ref"] = current["key_id"]
        data = self.client.write(f"{mount}/root/generate/{kind}", params, idempotent=False)["data"]
        return data["issuer_id"], None

    def _new_intermediate(self, spec, mount, parent_mount, parent, current, keep_key, now):
        params = _ca_params(spec)
        kind = "existing" if keep_key else "internal"
        if keep_key:
            params = {k: v for k, v in params.items() if k not in ("key_type", "key_bits")}
            params["key_ref"] = current["key_id"]
        csr = self.client.write(f"{mount}/intermediate/generate/{kind}", params, idempotent=False)["data"]["csr"]
        left_days = (parent["cert"].not_valid_after_utc - now).total_seconds() / 86400
        days, warning = spec.valid_days, None
        if days > left_days:  # sign-intermediate does not truncate to the issuer by itself
            days = left_days
            warning = (f"CA {spec.name!r}: valid_days {spec.valid_days:g} clipped to {left_days:.0f} days, the "
                       f"remaining lifetime of its issuer {spec.issuer or parent_mount!r}")
        signing = {k: v for k, v in params.items() if k not in ("key_type", "key_bits", "key_ref")}
        signed = self.client.write(f"{parent_mount}/root/sign-intermediate", {
            **signing, "csr": csr, "ttl": f"{max(1, int(days * 24))}h", "use_csr_values": False, "format": "pem"},
            idempotent=False)["data"]
        bundle = "".join(_pems([signed["certificate"]] + [c for c in signed.get("ca_chain") or []
                                                          if c.strip() != signed["certificate"].strip()]))
        mapping = self.client.write(f"{mount}/intermediate/set-signed", {"certificate": bundle})["data"]["mapping"]
        mine = [i for i, k in (mapping or {}).items() if k]
        if len(mine) != 1:
            raise PkiError(f"OpenBao imported {mapping!r} into {mount!r}: expected exactly one issuer with a key",
                           "openbao")
        return mine[0], warning

    def _mount_info(self, mount):
        try:
            return self.client.read(f"sys/mounts/{mount}", missing_ok=True)
        except OpenBaoError as e:
            if e.code == "missing_mount" or "no secret engine mount" in str(e).lower():
                return None
            raise

    def _issuer(self, mount):
        """The mount's default issuer: {id, key_id, cert, chain (above it), behavior} or None."""
        try:
            default = (self.client.read(f"{mount}/config/issuers", missing_ok=True) or {}).get("data", {})
        except OpenBaoError as e:
            if e.code == "missing_mount":
                return None
            raise
        issuer_id = default.get("default")
        if not issuer_id:
            return None
        data = self.client.read(f"{mount}/issuer/{issuer_id}")["data"]
        certificate = _pems([data["certificate"]])[0]
        chain = [c for c in _pems(data.get("ca_chain")) if c.strip() != certificate.strip()]
        return {"id": issuer_id, "key_id": data.get("key_id") or "", "pem": certificate, "chain": chain,
                "cert": x509.load_pem_x509_certificate(certificate.encode()),
                "behavior": data.get("leaf_not_after_behavior")}

    def _result(self, spec, mount, action, reasons, issuer, before, warnings):
        result = {"name": spec.name, "mount": mount, "changed": action != "unchanged", "action": action,
                  "reasons": list(reasons), "reason": "; ".join(reasons), "issuer_ca": spec.issuer,
                  "is_root": spec.issuer is None, "before": pem.facts(before) if before is not None else None,
                  "warnings": warnings}
        if issuer is not None:
            result.update(pem.facts(issuer["cert"]))
            result.update(certificate=issuer["pem"], chain="".join(issuer["chain"]),
                          fullchain=issuer["pem"] + "".join(issuer["chain"]))
        return result

    # ---- roles ----------------------------------------------------------------------------------------
    def ensure_roles(self, mount, profile_limits=None):
        """Roles server/client/both: EKU flags, key types, TTL caps; names only from the request."""
        results = {}
        for profile, (server, client) in PROFILE_FLAGS.items():
            limits = {**ROLE_DEFAULTS, **((profile_limits or {}).get(profile) or {})}
            want = {"server_flag": server, "client_flag": client, "code_signing_flag": False,
                    "email_protection_flag": False, "key_type": limits["key_type"], "key_bits": limits["key_bits"],
                    "ttl": _hours(limits["ttl_days"]), "max_ttl": _hours(limits["max_ttl_days"]),
                    "allow_any_name": True, "enforce_hostnames": False, "allow_ip_sans": True,
                    "allow_wildcard_certificates": True, "allow_localhost": True, "cn_validations": ["disabled"],
                    "use_csr_common_name": False, "use_csr_sans": False, "require_cn": False, "no_store": False,
                    "basic_constraints_valid_for_non_ca": True, "key_usage": ["DigitalSignature"],
                    "ext_key_usage": [], "issuer_ref": "default"}
            if limits.get("allowed_domains"):  # names below these domains only (the inventory's names still rule)
                want.update(allow_any_name=False, allowed_domains=list(limits["allowed_domains"]),
                            allow_subdomains=True, allow_bare_domains=True, enforce_hostnames=True)
            have = (self.client.read(f"{mount}/roles/{profile}", missing_ok=True) or {}).get("data")
            diff = sorted(k for k, v in want.items() if have is None or _norm(k, have.get(k)) != _norm(k, v))
            if diff:
                self.client.write(f"{mount}/roles/{profile}", want)
            results[profile] = {"changed": bool(diff), "reasons": ["missing"] if have is None else diff}
        return {"changed": any(r["changed"] for r in results.values()), "roles": results}

    # ---- leaves ---------------------------------------------------------------------------------------
    def sign_many(self, mount, requests, retry_uncertain=False, then=None):
        """Sign every request concurrently over the client's pool; one result per request, in order.

        A result is {ok: True, certificate, serial, not_after, fingerprint_sha256, chain, warnings, and the parsed
        cert, its pem, facts and san} or {ok: False, error, code, maybe_issued}. With ``retry_uncertain`` a
        request whose outcome is unknown is sent once more and the result says so in ``warnings`` (a duplicate
        may exist). ``then(i, result)``, when given, runs in the pool's thread as soon as request i is answered
        (while the others are still in flight); what it returns is that request's result.
        """
        def one(i):
            result = self._sign_one(mount, requests[i], retry_uncertain)
            return then(i, result) if then is not None else result
        with ThreadPoolExecutor(max_workers=self.client.pool_size) as pool:
            return list(pool.map(one, range(len(requests))))

    def _sign_one(self, mount, req, retry_uncertain):
        profile = req.get("profile") or "server"
        dns, emails = list(req.get("dns") or []), list(req.get("email") or [])
        ips = [str(i) for i in req.get("ip") or []]
        body, warnings = sign_body(req), []
        try:
            try:
                data = self.client.write(f"{mount}/sign/{profile}", body, idempotent=False)
            except OpenBaoError as e:
                if not (e.maybe_done and retry_uncertain):
                    raise
                warnings.append(f"retried after an uncertain failure ({e}); the first attempt may also have "
                                f"issued a certificate")
                data = self.client.write(f"{mount}/sign/{profile}", body, idempotent=False)
        except OpenBaoError as e:
            message = str(e)
            if e.code == "rejected":
                message = (f"OpenBao at {e.node}: role {profile!r} on mount {mount!r} refused the certificate "
                           f"for {body['common_name'] or dns or ips}: {'; '.join(e.errors) or e} (allow the name in "
                           f"the role, e.g. its allowed_domains, or change the inventory)")
            if e.maybe_done:
                message += " (a certificate may have been issued: check <mount>/certs before re-running)"
            return {"ok": False, "error": message, "code": e.code, "maybe_issued": e.maybe_done or bool(warnings)}
        data, warnings = data["data"], warnings + list(data.get("warnings") or [])
        cert = x509.load_pem_x509_certificate(data["certificate"].encode())
        # the CSR's key: given by a caller that read the CSR already (its SubjectPublicKeyInfo DER), else read here
        public_der = req.get("public_der") or keys.public_der(x509.load_pem_x509_csr(body["csr"].encode()).public_key())
        want = {("dns", d.lower()) for d in dns} | {("ip", i) for i in ips} | {("email", e) for e in emails}
        names = pem.san(cert)
        if keys.public_der(cert.public_key()) != public_der or names != want:
            return {"ok": False, "error": f"OpenBao mount {mount!r} returned a certificate whose key or names differ "
                                          f"from the request (serial {serial_hex(cert.serial_number)}): check the "
                                          f"role {profile!r} (use_csr_sans must be false)", "code": "mismatch",
                    "maybe_issued": True}
        chain, facts = _pems(data.get("ca_chain")), pem.facts(cert)
        return {"ok": True, "certificate": _pems([data["certificate"]])[0], "chain": "".join(chain),
                "serial": facts["serial"], "not_after": facts["not_after"],
                "fingerprint_sha256": facts["fingerprint_sha256"], "warnings": warnings,
                "cert": cert, "pem": pem.to_pem(cert), "facts": facts, "san": names}

    # ---- revocation and records ---------------------------------------------------------------------
    def revoke(self, mount, serials):
        """Revoke each serial; {serial: {changed, revocation_time}}. Revoking twice changes nothing."""
        out = {}
        for serial in serials:
            record = self.client.read(f"{mount}/cert/{serial_colons(serial)}", missing_ok=True)
            if record is None:
                raise PkiError(f"serial {serial!r} was not issued by mount {mount!r}: nothing to revoke "
                               f"(list_certificates shows what it issued)", "unknown_serial")
            if record["data"].get("revocation_time"):
                out[serial_hex(serial)] = {"changed": False, "revocation_time": record["data"]["revocation_time"]}
                continue
            data = self.client.write(f"{mount}/revoke", {"serial_number": serial_colons(serial)})["data"]
            out[serial_hex(serial)] = {"changed": True, "revocation_time": data.get("revocation_time")}
        return out

    def crl(self, mount):
        """The mount's current CRL, PEM bytes."""
        return self.client.raw(f"{mount}/crl/pem")

    def list_certificates(self, mount):
        """Everything the mount has stored: [{serial, not_after, subject, revoked, is_ca}], fetched over the pool.

        Right after a raft failover OpenBao's LIST was seen to lag a few seconds behind what it issued
        (each certificate could be read already): a report made then may miss the newest ones.
        """
        serials = self.client.list(f"{mount}/certs")

        def one(serial):
            data = self.client.read(f"{mount}/cert/{serial}")["data"]
            cert = x509.load_pem_x509_certificate(data["certificate"].encode())
            return {"serial": serial_hex(serial), "not_after": pem.iso(cert.not_valid_after_utc),
                    "subject": cert.subject.rfc4514_string(), "revoked": bool(data.get("revocation_time")),
                    "is_ca": pem.is_ca(cert)}
        with ThreadPoolExecutor(max_workers=self.client.pool_size) as pool:
            return list(pool.map(one, serials))


def sign_body(req):
    """The JSON body of ``<mount>/sign/<profile>`` for one request of ``OpenBaoCA.sign_many``."""
    names = [str(n) for n in list(req.get("dns") or []) + list(req.get("email") or [])]
    body = {"csr": req["csr_pem"].decode() if isinstance(req["csr_pem"], bytes) else req["csr_pem"],
            "common_name": req.get("common_name") or "", "alt_names": ",".join(names),
            "ip_sans": ",".join(str(i) for i in req.get("ip") or []), "exclude_cn_from_sans": True, "format": "pem",
            "remove_roots_from_chain": True}
    if req.get("ttl_days"):
        body["ttl"] = _hours(req["ttl_days"])
    return body


def _supported(spec):
    nc = spec.name_constraints
    if nc.excluded_dns or nc.permitted_ip or nc.excluded_ip:
        raise PkiError(f"CA {spec.name!r}: the openbao backend supports name constraints with permitted_dns only "
                       f"(OpenBao's PKI engine has no excluded or IP name constraints); remove excluded_dns, "
                       f"permitted_ip and excluded_ip or use the local backend", "unsupported")
    if nc and not nc.critical:
        raise PkiError(f"CA {spec.name!r}: OpenBao always marks name constraints critical; set "
                       f"name_constraints.critical to true (the default)", "unsupported")
    if dict(spec.subject.attrs).get("email"):
        raise PkiError(f"CA {spec.name!r}: the openbao backend cannot put an email address in a CA subject; "
                       f"remove subject.email", "unsupported")


def _ca_params(spec):
    params = {"common_name": spec.subject.common_name, "exclude_cn_from_sans": True,
              "max_path_length": -1 if spec.path_length is None else spec.path_length,
              "permitted_dns_domains": list(spec.name_constraints.permitted_dns)}
    for name, param in SUBJECT_PARAMS.items():
        value = dict(spec.subject.attrs).get(name)
        params[param] = [value] if value else []
    if spec.key.type == "ec":
        params.update(key_type="ec", key_bits=EC_BITS[spec.key.curve])
    elif spec.key.type == "rsa":
        params.update(key_type="rsa", key_bits=spec.key.size)
    else:
        params.update(key_type="ed25519")
    return params


def _reasons(spec, cert, parent, force, now):
    if cert is None:
        return ["missing"]
    reasons, changes = [], renewal.ca_changes(spec, cert)
    if keys.spec_of(cert.public_key()) != spec.key:
        changes.append("key_type")
    if changes:
        reasons.append("spec_changed: " + ", ".join(changes))
    return reasons + renewal.ca_lifecycle_reasons(spec, cert, parent["cert"] if parent else None, force, now)


def _action(before, reasons, changed):
    if not changed:
        return "unchanged"
    return "issued" if before is None else ("renewed" if reasons else "updated")


def _max_ttl(mount_info):
    cfg = (mount_info.get("data") or mount_info).get("config") or {}
    return int(cfg.get("max_lease_ttl") or 0)


def _norm(key, value):
    if key in ("ttl", "max_ttl") and isinstance(value, str):
        return int(value[:-1]) * 3600 if value.endswith("h") else int(value)
    if isinstance(value, list):
        return sorted(value)
    return value


class OpenBaoBackend(Backend):
    """The ``Backend`` on OpenBao: CAs and the issuance record in OpenBao; ``store`` only caches the CA
    certificates, chains and CRLs the roles copy to hosts (it may start empty every run)."""

    name = "openbao"

    def __init__(self, client, store):
        self.client, self.ca, self.store = client, OpenBaoCA(client), store

    def ensure_ca(self, spec, passphrase=None, issuer_passphrase=None, force=False, check=False, now=None):
        try:
            result = self.ca.ensure_ca(spec, check=check, force=force, now=now)
        except PkiError as e:  # check mode previews a first run, whose parent an earlier task would create
            if not (check and e.code == "no_issuer"):
                raise
            result = {"name": spec.name, "mount": self.client.mount(spec.name), "changed": True, "action": "issued",
                      "reasons": ["missing"], "reason": "missing", "issuer_ca": spec.issuer,
                      "is_root": spec.issuer is None, "before": None,
                      "warnings": [f"check mode: issuer {spec.issuer!r} does not exist yet ({e})"]}
        if passphrase:
            result["warnings"].append(f"CA {spec.name!r}: passphrase ignored, the key stays inside OpenBao")
        if not check:
            roles = self.ca.ensure_roles(result["mount"])
            if roles["changed"] and not result["changed"]:
                result.update(changed=True, action="updated",
                              reasons=[f"role {r}: {', '.join(v['reasons'])}" for r, v in roles["roles"].items()
                                       if v["changed"]])
                result["reason"] = "; ".join(result["reasons"])
            self._cache_ca(spec.name, result)
        result["paths"] = {f: self.store.ca_path(spec.name, f + ".pem") for f in ("cert", "chain", "fullchain", "crl")
                           if f != "chain" or spec.issuer}
        for key in ("certificate", "chain", "fullchain"):
            result.pop(key, None)
        return result

    def _cache_ca(self, name, result):
        """The CA's certificate and chains in the store for the roles (a cache: not a change of its own)."""
        with self.store.lock():
            txn = self.store.transaction()
            txn.changed(self.store.ca_path(name, "cert.pem"), result["certificate"].encode())
            if result["chain"]:
                txn.changed(self.store.ca_path(name, "chain.pem"), result["chain"].encode())
            txn.changed(self.store.ca_path(name, "fullchain.pem"), result["fullchain"].encode())
            if txn.pending:
                txn.commit()

    def issuer(self, name, passphrase=None):
        mount = self.client.mount(name)
        found = self.ca._issuer(mount)
        if found is None:
            raise PkiError(f"issuer {name!r} does not exist in OpenBao (mount {mount!r} has no CA) at "
                           f"{self.client.nodes[0][3]}: create it with mtls.rollout.ca first", "no_issuer")
        issuer = Issuer(name, found["cert"], [x509.load_pem_x509_certificate(c.encode()) for c in found["chain"]])
        issuer.mount = mount
        return issuer

    def refuse_unsupported(self, specs):
        for spec in specs:
            _leaf_supported(spec)

    def sign_many(self, issuer, requests, index, now, on_signed=None):
        """Through ``<mount>/sign/<profile>`` over the client's pool; a controller key is sent as a CSR."""
        self.refuse_unsupported([req.spec for req in requests])
        # each certificate is checked against the key to certify (the CSR's: the host's report read it)
        batch = [{"csr_pem": req.csr_pem or _csr(req.key), "public_der": keys.public_der(req.public_key),
                  "profile": req.spec.profile, "common_name": req.spec.subject.common_name or "",
                  "dns": list(req.spec.dns), "ip": list(req.spec.ip), "email": list(req.spec.email),
                  "ttl_days": req.spec.valid_days}
                 for req in requests]

        def result(i, signed):
            out = (Signed(signed["cert"], signed["pem"], signed["facts"], signed["san"]) if signed["ok"]
                   else SignError(signed["error"], signed["code"], signed["maybe_issued"]))
            if on_signed is not None:
                on_signed(i, out)
            return out
        return self.ca.sign_many(issuer.mount, batch, then=result)

    def revoke(self, names=(), serials=(), reason="unspecified", cas=(), check=False, valid_days=7,
               refresh_before_days=None, force=False, **_ignored):
        """Revoke in OpenBao (``<mount>/revoke``), then fetch each CA's CRL into the cache.

        By name: the certificates of the store's record under that name when the cache has one, else every
        unexpired leaf of the CAs whose common name is the name. By serial: looked up in every CA of ``cas``."""
        now = pem.utcnow()
        wanted = [crl_mod.normalise_serial(s) for s in serials]
        issued = self.list_issued(cas, current_only=False)
        cached = {r["serial"]: r["name"] for r in self.store.load_index().records} if os.path.isdir(
            self.store.root) else {}
        targets = []
        for name in names:
            found = [c for c in issued if c["kind"] == "leaf" and c["cert"].not_valid_after_utc > now
                     and (cached.get(c["serial"]) == name or c["common_name"] == name)]
            if not found:
                raise PkiError(f"no certificate named {name!r} in OpenBao CAs {', '.join(cas)} (matched by the "
                               f"cache's record and by common name): nothing revoked; give its serial instead",
                               "unknown_name")
            targets += [(c, name) for c in found]
        for serial in wanted:
            found = [c for c in issued if c["serial"] == serial]
            if not found:
                raise PkiError(f"serial {serial!r} was not issued by OpenBao CAs {', '.join(cas)}: nothing revoked",
                               "unknown_serial")
            targets += [(c, serial) for c in found]
        revoked = []
        for c, asked in targets:
            entry = {"name": c["name"], "kind": c["kind"], "serial": c["serial"], "issuer": c["issuer"],
                     "subject": c["cert"].subject.rfc4514_string(), "not_after": pem.iso(c["cert"].not_valid_after_utc),
                     "requested": asked, "reason": reason}
            if c["revoked"]:
                entry.update(action="already_revoked", revoked_at=c["revoked"])
            else:
                entry.update(action="revoked", revoked_at=pem.iso(now))
                if not check:
                    done = self.ca.revoke(self.client.mount(c["issuer"]), [c["serial"]])[c["serial"]]
                    entry["action"] = "revoked" if done["changed"] else "already_revoked"
            revoked.append(entry)
        ca_names = list(dict.fromkeys(list(cas) + [e["issuer"] for e in revoked]))
        crls = [self._ensure_crl(n, valid_days, refresh_before_days, force, check, now) for n in ca_names]
        changed = any(e["action"] == "revoked" for e in revoked) or any(c["changed"] for c in crls)
        return {"changed": changed, "revoked": revoked, "crls": crls, "crl_files": [c["path"] for c in crls]}

    def _ensure_crl(self, name, valid_days, refresh_before_days, force, check, now):
        """OpenBao signs the CRL; re-signed (``crl/rotate``) when forced or in the last part of its validity."""
        mount, path = self.client.mount(name), self.store.ca_path(name, "crl.pem")
        result = {"ca": name, "path": path, "changed": False, "reasons": [], "reason": "", "action": "unchanged"}
        expiry = _hours(valid_days)
        config = (self.client.read(f"{mount}/config/crl", missing_ok=True) or {}).get("data") or {}
        if _norm("ttl", config.get("expiry") or "0h") != _norm("ttl", expiry):
            result["reasons"].append("validity_changed")
            if not check:
                self.client.write(f"{mount}/config/crl", {"expiry": expiry})
        crl = x509.load_pem_x509_crl(self.crl(name))
        window = valid_days / 3 if refresh_before_days is None else refresh_before_days
        left = (crl.next_update_utc - now).total_seconds() / 86400 if crl.next_update_utc else 0
        if left <= window:
            result["reasons"].append("expired" if left <= 0 else f"due: {left:.1f} days left")
        if force:
            result["reasons"].append("forced")
        if result["reasons"]:
            result.update(changed=True, action="refreshed", reason="; ".join(result["reasons"]))
            if not check:
                self.client.read(f"{mount}/crl/rotate")
                crl = x509.load_pem_x509_crl(self.crl(name))
        result["before"] = None
        result.update({"number": crl_mod.crl_number(crl), "this_update": pem.iso(crl.last_update_utc),
                       "next_update": pem.iso(crl.next_update_utc) if crl.next_update_utc else None,
                       "revoked_count": len(crl)})
        if not check:
            found = self.ca._issuer(mount)  # the CA beside its CRL, so the cache checks it whatever ran before
            chain = "".join(found["chain"])
            self._cache_ca(name, {"certificate": found["pem"], "chain": chain, "fullchain": found["pem"] + chain})
            with self.store.lock():
                txn = self.store.transaction()
                txn.changed(path, crl.public_bytes(serialization.Encoding.PEM))
                index = self.store.load_index()
                if self._record_revoked(index, name, mount, crl):
                    txn.write(self.store.index_path, index.dumps(), KEY_MODE)
                if txn.pending:
                    txn.commit()
        return result

    def _record_revoked(self, index, name, mount, crl):
        """The cache's record learns every revocation the CA's CRL lists (the nginx role checks the cached CRL
        against it); True when it changed."""
        changed = False
        for entry in crl:
            serial = format(entry.serial_number, "x")
            when = pem.iso(entry.revocation_date_utc)
            known = [r for r in index.records if r["issuer"] == name and r["serial"] == serial]
            if not known:
                data = self.client.read(f"{mount}/cert/{serial_colons(serial)}", missing_ok=True)
                if data is None:
                    continue
                cert = x509.load_pem_x509_certificate(data["data"]["certificate"].encode())
                index.add(issuance.record("leaf", _common_name(cert) or serial, name, cert,
                                          reason="recorded from OpenBao"))
                known = [index.records[-1]]
            for r in known:
                if r.get("status") != "revoked":
                    r.update(status="revoked", revoked_at=when)
                    changed = True
        return changed

    def crl(self, ca_name):
        data = self.ca.crl(self.client.mount(ca_name))
        return data if data.strip() else None

    def list_issued(self, ca_names=None, current_only=True):
        """The CAs' own certificates, then every leaf each CA issued (read from ``<mount>/certs`` over the pool);
        ``current_only`` keeps the newest leaf per subject. Leaves are named by the cache's record, else their CN."""
        ca_names = list(ca_names or [])
        if not ca_names:
            raise PkiError("the openbao backend lists certificates per CA: give the CA names (cas)", "config")
        cached = {r["serial"]: r["name"] for r in self.store.load_index().records} if os.path.isdir(
            self.store.root) else {}
        out, cas = [], {}
        for name in ca_names:
            issuer = self.issuer(name)
            cas[pem.serial_hex(issuer.cert)] = name
            out.append(_row(name, "ca", issuer.cert, None, name))
        for name in ca_names:
            mount = self.client.mount(name)
            serials = self.client.list(f"{mount}/certs")

            def one(serial, mount=mount):
                return self.client.read(f"{mount}/cert/{serial}")["data"]
            with ThreadPoolExecutor(max_workers=self.client.pool_size) as pool:
                records = list(pool.map(one, serials))
            newest = {}
            for data in records:
                cert = x509.load_pem_x509_certificate(data["certificate"].encode())
                if pem.is_ca(cert):
                    continue
                serial = pem.serial_hex(cert)
                revoked = pem.iso(dt.datetime.fromtimestamp(data["revocation_time"], dt.timezone.utc)) \
                    if data.get("revocation_time") else None
                row = _row(cached.get(serial) or _common_name(cert) or serial, "leaf", cert, revoked, name)
                key = row["subject"] if current_only else serial
                if key not in newest or newest[key]["cert"].not_valid_before_utc < cert.not_valid_before_utc:
                    newest[key] = row
            out += list(newest.values())
        return out


def _row(name, kind, cert, revoked, issuer):
    return {"name": name, "kind": kind, "cert": cert, "serial": pem.serial_hex(cert), "revoked": revoked,
            "issuer": issuer, "common_name": _common_name(cert), "subject": cert.subject.rfc4514_string()}


def _common_name(cert):
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return cns[0].value if cns else None


def _leaf_supported(spec):
    extra = [k for k, v in spec.subject.attrs if k != "common_name" and v]
    if extra:
        raise PkiError(f"certificate {spec.name!r}: the openbao backend puts the common name only in a leaf's "
                       f"subject (OpenBao's roles fix the rest); remove {', '.join(sorted(extra))} or use the local "
                       f"backend", "unsupported")
    if spec.crl_url:
        raise PkiError(f"certificate {spec.name!r}: crl_url is not supported with the openbao backend (OpenBao "
                       f"sets revocation URLs per mount, <mount>/config/urls); leave mtls_crl_url empty", "unsupported")


def _csr(key):
    """A CSR for a key the controller holds (OpenBao signs CSRs only); its names are ignored by the role."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, build.signature_hash(key)).public_bytes(serialization.Encoding.PEM)
