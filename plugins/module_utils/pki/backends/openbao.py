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

from concurrent.futures import ThreadPoolExecutor

from ...cryptography_dep import record_missing

from .. import keys, pem, renewal
from ..errors import PkiError
from .openbao_http import OpenBaoError

try:
    from cryptography import x509
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
    def sign_many(self, mount, requests, retry_uncertain=False):
        """Sign every request concurrently over the client's pool; one result per request, in order.

        A result is {ok: True, certificate, serial, not_after, fingerprint_sha256, chain, warnings} or
        {ok: False, error, code, maybe_issued}. With ``retry_uncertain`` a request whose outcome is unknown
        is sent once more and the result says so in ``warnings`` (a duplicate may exist).
        """
        with ThreadPoolExecutor(max_workers=self.client.pool_size) as pool:
            return list(pool.map(lambda r: self._sign_one(mount, r, retry_uncertain), requests))

    def _sign_one(self, mount, req, retry_uncertain):
        profile = req.get("profile") or "server"
        dns, emails = list(req.get("dns") or []), list(req.get("email") or [])
        ips = [str(i) for i in req.get("ip") or []]
        body = {"csr": req["csr_pem"].decode() if isinstance(req["csr_pem"], bytes) else req["csr_pem"],
                "common_name": req.get("common_name") or "", "alt_names": ",".join(dns + emails),
                "ip_sans": ",".join(ips), "exclude_cn_from_sans": True, "format": "pem",
                "remove_roots_from_chain": True}
        if req.get("ttl_days"):
            body["ttl"] = _hours(req["ttl_days"])
        warnings = []
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
        csr = x509.load_pem_x509_csr(body["csr"].encode())
        want = {("dns", d.lower()) for d in dns} | {("ip", i) for i in ips} | {("email", e) for e in emails}
        if keys.public_der(cert.public_key()) != keys.public_der(csr.public_key()) or pem.san(cert) != want:
            return {"ok": False, "error": f"OpenBao mount {mount!r} returned a certificate whose key or names differ "
                                          f"from the request (serial {serial_hex(cert.serial_number)}): check the "
                                          f"role {profile!r} (use_csr_sans must be false)", "code": "mismatch",
                    "maybe_issued": True}
        chain = _pems(data.get("ca_chain"))
        return {"ok": True, "certificate": _pems([data["certificate"]])[0], "chain": "".join(chain),
                "serial": serial_hex(cert.serial_number), "not_after": pem.iso(cert.not_valid_after_utc),
                "fingerprint_sha256": pem.fingerprint(cert), "warnings": warnings}

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
