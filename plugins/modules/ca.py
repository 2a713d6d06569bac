#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ca
short_description: Ensure a root or intermediate certificate authority in the PKI store
version_added: 0.1.0
description:
  - Creates a self-signed root CA when O(issuer) is omitted, otherwise an intermediate CA signed by the CA
    named O(issuer). Hierarchies of any depth work (root, intermediate, intermediate, ...).
  - CA certificates get basicConstraints (critical, with O(path_length)), keyUsage keyCertSign and cRLSign
    (critical), subject and authority key identifiers, and optional name constraints.
  - "Re-issues only for a reason, which the result names - V(missing), V(key_mismatch),
    V(spec_changed: subject), V(issuer_changed), V(outlives_issuer), V(due: N days left), V(forced).
    The key is kept on re-issue unless the key type changed or O(rotate_key) is set, so certificates
    issued earlier keep verifying."
  - Writes C(ca/<name>/cert.pem), C(key.pem) (encrypted when O(passphrase) is set), C(chain.pem) (the CAs
    above it up to the root; not written for a root) and C(fullchain.pem) (this CA then C(chain.pem)).
  - With O(backend=openbao) the CA is the PKI mount C(<mount_prefix><name>) - its key made inside OpenBao, never
    leaving it - with the roles C(server), C(client) and C(both); the store then caches C(cert.pem), C(chain.pem)
    and C(fullchain.pem) only (a cache refresh is not a change). O(passphrase) is ignored and O(cross_signed_by)
    is refused.
  - With O(cas), several CAs in one module run (the whole hierarchy, parents before children), in list order; it stops
    at the first that fails (those below it would fail too).
author: mtls.rollout maintainers (!UNKNOWN)
extends_documentation_fragment:
  - mtls.rollout.store
  - mtls.rollout.backend
  - mtls.rollout.store.subject
  - mtls.rollout.attributes
  - mtls.rollout.attributes.in_process
  - mtls.rollout.requirements
attributes:
  check_mode:
    support: full
    description: Reports what would be issued and why, writes nothing.
  diff_mode:
    support: full
    description: Shows serial, subject and validity before and after.
options:
  name:
    description:
      - The CA's name in the store (one path component), also the default common name.
      - Exactly one of O(name) and O(cas) is required.
    type: str
  cas:
    description:
      - Several CAs in one run instead of one - each item has the options of one CA (O(cas[].name) required), which
        are then refused at the top level; O(pki_dir), O(backend), O(openbao), O(crl_url) and O(force) apply to all.
      - A CA's key passphrase is its item's O(cas[].passphrase), else O(passphrase). The issuer and cross-signers of
        an item use the passphrase of their own item; those not in the list use O(cross_passphrases).
    type: list
    elements: dict
    version_added: 0.2.0
    suboptions:
      name:
        description: As O(name).
        type: str
        required: true
      issuer:
        description: As O(issuer).
        type: str
      subject:
        description: As O(subject).
        type: dict
        suboptions:
          common_name:
            description: As O(subject.common_name).
            type: str
          organization:
            description: As O(subject.organization).
            type: str
          organizational_unit:
            description: As O(subject.organizational_unit).
            type: str
          country:
            description: As O(subject.country).
            type: str
          state:
            description: As O(subject.state).
            type: str
          locality:
            description: As O(subject.locality).
            type: str
          email:
            description: As O(subject.email).
            type: str
      key_type:
        description: As O(key_type).
        type: str
        choices: [ec, rsa, ed25519]
        default: ec
      key_size:
        description: As O(key_size).
        type: int
      curve:
        description: As O(curve).
        type: str
      valid_days:
        description: As O(valid_days).
        type: float
      path_length:
        description: As O(path_length).
        type: int
      name_constraints:
        description: As O(name_constraints).
        type: dict
        suboptions:
          permitted_dns:
            description: As O(name_constraints.permitted_dns).
            type: list
            elements: str
          excluded_dns:
            description: As O(name_constraints.excluded_dns).
            type: list
            elements: str
          permitted_ip:
            description: As O(name_constraints.permitted_ip).
            type: list
            elements: str
          excluded_ip:
            description: As O(name_constraints.excluded_ip).
            type: list
            elements: str
          critical:
            description: As O(name_constraints.critical).
            type: bool
            default: true
      passphrase:
        description: This CA's key passphrase, as O(passphrase) (default O(passphrase)).
        type: str
      renew_before_days:
        description: As O(renew_before_days).
        type: float
      rotate_key:
        description: As O(rotate_key).
        type: bool
        default: false
      cross_signed_by:
        description: As O(cross_signed_by).
        type: list
        elements: str
        default: []
  issuer:
    description: Name of the CA in the same store that signs this one. Omit for a self-signed root.
    type: str
  key_type:
    description: Key algorithm.
    type: str
    choices: [ec, rsa, ed25519]
    default: ec
  key_size:
    description: RSA modulus size (2048, 3072 or 4096; default 3072), or the EC curve size (256, 384, 521).
    type: int
  curve:
    description: EC curve (V(P-256), V(P-384), V(P-521)); default V(P-256).
    type: str
  valid_days:
    description: Lifetime in days. Default 3650 for a root, 1825 for an intermediate. An intermediate is clipped
      to its issuer's expiry (with a warning) rather than outliving it.
    type: float
  path_length:
    description: basicConstraints pathLenConstraint; V(0) lets this CA issue only leaf certificates. Omit for no limit.
    type: int
  name_constraints:
    description: Restrict the names any certificate below this CA may carry.
    type: dict
    suboptions:
      permitted_dns:
        description: DNS domains permitted (V(example.com) covers it and its subdomains, V(.example.com) only subdomains).
        type: list
        elements: str
      excluded_dns:
        description: DNS domains excluded.
        type: list
        elements: str
      permitted_ip:
        description: IP networks permitted, in CIDR form.
        type: list
        elements: str
      excluded_ip:
        description: IP networks excluded, in CIDR form.
        type: list
        elements: str
      critical:
        description: Mark the extension critical (RFC 5280 requires it).
        type: bool
        default: true
  passphrase:
    description:
      - Encrypt this CA's private key with this passphrase (PKCS#8, AES-256-CBC). Needed to use the key later.
      - An existing unencrypted key is encrypted when a passphrase is first given.
      - With O(cas), the passphrase of every CA whose item has none.
    type: str
  issuer_passphrase:
    description: Passphrase of the issuer's key, when it is encrypted.
    type: str
  renew_before_days:
    description: Re-issue when fewer days than this remain. Default - the last third of the lifetime.
    type: float
  crl_url:
    description:
      - A plain C(http://) base URL; an intermediate then carries a CRL distribution point C(<crl_url><issuer>.crl) and
        an AIA caIssuers C(<crl_url><issuer>.crt) (DER files, which M(mtls.rollout.crl) and the nginx role can serve).
        A root carries none. A changed URL re-issues (reason V(spec_changed) naming C(crl_url)).
    type: str
  rotate_key:
    description: Generate a new key whenever the certificate is re-issued (default keeps the key).
    type: bool
    default: false
  force:
    description: Re-issue now, whatever the state.
    type: bool
    default: false
  cross_signed_by:
    description:
      - Other CAs of the store that certify this CA's name and key too, each in C(ca/<name>/cross-<signer>.pem) - for
        a root rotation, the new root cross-signed by the old one, so that a server serving
        C(leaf, intermediate, cross) still verifies for clients that trust only the old root (and the old root by
        the new one, for the reverse). Issued again only for a reason (V(missing), V(subject_changed),
        V(issuer_changed), V(due)); never beyond this CA's or the signer's expiry.
    type: list
    elements: str
    default: []
  cross_passphrases:
    description: Passphrases of the signers' keys, by CA name (never logged); with O(cas), of the issuers and signers
      not in the list.
    type: dict
    default: {}
seealso:
  - module: mtls.rollout.certificates
  - module: mtls.rollout.verify
"""

EXAMPLES = r"""
- name: Root CA
  mtls.rollout.ca:
    name: root
    pki_dir: /srv/pki
    subject:
      common_name: Example Root CA
      organization: Example Ltd
      country: DE
    passphrase: "{{ vault_ca_passphrase }}"

- name: Issuing CA for clients, two levels down
  mtls.rollout.ca:
    name: client-ca
    issuer: root
    pki_dir: /srv/pki
    path_length: 0
    issuer_passphrase: "{{ vault_ca_passphrase }}"
    name_constraints:
      permitted_dns: [example.com]

- name: The whole hierarchy in one module run
  mtls.rollout.ca:
    pki_dir: /srv/pki
    passphrase: "{{ vault_ca_passphrase }}"
    cas:
      - name: root
        subject: {common_name: Example Root CA}
      - name: server-ca
        issuer: root
        path_length: 0
      - name: client-ca
        issuer: root
        path_length: 0
"""

RETURN = r"""
cas:
  description: With O(cas), one result per CA in list order (on failure, those done before it), each with the keys
    below (and its own V(diff) in the top-level V(diff) list); the keys below are then not at the top level.
  returned: with O(cas)
  type: list
  elements: dict
  version_added: 0.2.0
name:
  description: The CA's name.
  returned: always
  type: str
cross:
  description: One entry per O(cross_signed_by) signer - V(signer), V(path), V(changed), V(reasons), and the facts
    (V(serial), V(not_after)) of the cross-certificate.
  returned: always
  type: list
  elements: dict
action:
  description: V(issued), V(renewed), V(updated) (only derived files or key encryption changed) or V(unchanged).
  returned: always
  type: str
  sample: renewed
reason:
  description: Why it was (or would be) re-issued, V(; )-joined; empty when unchanged.
  returned: always
  type: str
  sample: "due: 12 days left"
reasons:
  description: The reasons as a list.
  returned: always
  type: list
  elements: str
serial:
  description: Serial number in hex. Absent in check mode when a new certificate would be issued.
  returned: when a certificate exists
  type: str
issuer_ca:
  description: Name of the issuing CA in the store; null for a root.
  returned: always
  type: str
is_root:
  description: Whether this CA is a self-signed root.
  returned: always
  type: bool
subject:
  description: Subject DN (RFC 4514).
  returned: when a certificate exists
  type: str
not_after:
  description: Expiry, ISO 8601 UTC.
  returned: when a certificate exists
  type: str
days_remaining:
  description: Days until expiry.
  returned: when a certificate exists
  type: float
fingerprint_sha256:
  description: SHA-256 fingerprint of the certificate.
  returned: when a certificate exists
  type: str
paths:
  description: Files of this CA in the store.
  returned: always
  type: dict
  sample: {cert: /srv/pki/ca/root/cert.pem, key: /srv/pki/ca/root/key.pem}
warnings:
  description: Non-fatal notes, e.g. a lifetime clipped to the issuer's.
  returned: when not in check mode
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep
from ansible_collections.mtls.rollout.plugins.module_utils import module_args
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends import choice

try:  # the PKI engine needs the cryptography library on the control node
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import cross, names, specs
except ImportError:
    ENGINE_IMPORT_ERROR = traceback.format_exc()
else:  # the module_utils import without cryptography and record what failed
    ENGINE_IMPORT_ERROR = cryptography_dep.import_error()


# The options of one CA: top-level for one CA (name), or each item of cas for several in one run.
CA_OPTIONS = {
    "name": {"type": "str"},
    "subject": module_args.SUBJECT,
    "issuer": {"type": "str"},
    "key_type": {"type": "str", "choices": ["ec", "rsa", "ed25519"], "default": "ec"},
    "key_size": {"type": "int"},
    "curve": {"type": "str"},
    "valid_days": {"type": "float"},
    "path_length": {"type": "int"},
    "name_constraints": {"type": "dict", "options": {
        "permitted_dns": {"type": "list", "elements": "str"},
        "excluded_dns": {"type": "list", "elements": "str"},
        "permitted_ip": {"type": "list", "elements": "str"},
        "excluded_ip": {"type": "list", "elements": "str"},
        "critical": {"type": "bool", "default": True}}},
    "passphrase": {"type": "str", "no_log": True},
    "renew_before_days": {"type": "float"},
    "rotate_key": {"type": "bool", "default": False},
    "cross_signed_by": {"type": "list", "elements": "str", "default": []},
}
# with cas, these are per CA (in each item) and refused at the top level
PER_CA = ("subject", "issuer", "key_type", "key_size", "curve", "valid_days", "path_length", "name_constraints",
          "renew_before_days", "rotate_key", "cross_signed_by", "issuer_passphrase")


def ensure_one(module, store, backend, ca, passphrase, issuer_passphrase, cross_passphrases):
    """Issue, renew or leave alone one CA and its cross-certificates; its result (PkiError on failure)."""
    p = module.params
    spec = specs.ca_spec(ca["name"], ca["subject"], ca["issuer"], ca["key_type"], ca["key_size"], ca["curve"],
                         ca["valid_days"], ca["path_length"], ca["name_constraints"], ca["renew_before_days"],
                         ca["rotate_key"], p["crl_url"])
    result = backend.ensure_ca(spec, passphrase, issuer_passphrase, p["force"], module.check_mode)
    pending = module.check_mode and result["action"] == "issued"  # nothing to cross-sign yet
    result["cross"] = [] if pending else [
        cross.ensure_cross(store, spec.name, names.store_name(signer, "cross_signed_by"),
                           cross_passphrases.get(signer), check=module.check_mode)
        for signer in ca["cross_signed_by"]]
    result["changed"] = result["changed"] or any(c["changed"] for c in result["cross"])
    return result


SPEC = {
    "argument_spec": {
        **CA_OPTIONS,
        "cas": {"type": "list", "elements": "dict", "options": {**CA_OPTIONS, "name": {"type": "str", "required": True}}},
        "pki_dir": module_args.PKI_DIR,
        "backend": module_args.BACKEND,
        "openbao": module_args.OPENBAO,
        "issuer_passphrase": {"type": "str", "no_log": True},
        "crl_url": {"type": "str"},
        "force": {"type": "bool", "default": False},
        "cross_passphrases": {"type": "dict", "default": {}, "no_log": True},
    },
    "required_one_of": [("name", "cas")],
    "mutually_exclusive": [("name", "cas")] + [("cas", option) for option in PER_CA],
    "supports_check_mode": True,
}


def run(module):
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=ENGINE_IMPORT_ERROR)
    p = module.params
    cas = p["cas"] or [p]
    cross_passphrases = dict(p["cross_passphrases"] or {})
    if p["cas"]:  # each CA's passphrase is its item's, else passphrase; issuers and signers in the list use theirs
        for ca in cas:
            ca["passphrase"] = (ca["passphrase"] if ca["passphrase"] is not None else p["passphrase"]) or None
        cross_passphrases.update((ca["name"], ca["passphrase"]) for ca in cas)
    results = []
    try:
        store = Store(p["pki_dir"])
        backend = choice.backend(store, p["backend"], p["openbao"])
        if backend.name != "local" and any(ca["cross_signed_by"] for ca in cas):
            module.fail_json(msg=f"cross_signed_by is supported with the local backend only (backend {backend.name})")
        for warning in backend.warnings:
            module.warn(warning)
        for ca in cas:
            issuer_passphrase = p["issuer_passphrase"] if not p["cas"] else cross_passphrases.get(ca["issuer"])
            try:
                results.append(ensure_one(module, store, backend, ca, ca["passphrase"], issuer_passphrase,
                                          cross_passphrases))
            except PkiError as e:  # the CAs below it would fail too: stop with what was done so far
                if not p["cas"]:
                    raise
                module.fail_json(**{**module_args.fail_json_kwargs(e), "msg": f"CA {ca['name']}: {e}", "cas": results})
    except PkiError as e:
        module.fail_json(**module_args.fail_json_kwargs(e))
    for result in results:
        for warning in result.pop("warnings", []):
            module.warn(f"CA {result['name']}: {warning}" if p["cas"] else warning)
        before = result.pop("before")
        if module._diff:
            result["diff"] = module_args.diff(before, result)
    if not p["cas"]:
        module.exit_json(**results[0])
    diffs = [r.pop("diff") for r in results if "diff" in r]
    module.exit_json(changed=any(r["changed"] for r in results), cas=results, **({"diff": diffs} if diffs else {}))


def main():
    run(AnsibleModule(**SPEC))


if __name__ == "__main__":
    main()
