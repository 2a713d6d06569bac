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
author: mtls.rollout maintainers (!UNKNOWN)
extends_documentation_fragment:
  - mtls.rollout.store
  - mtls.rollout.backend
  - mtls.rollout.store.subject
  - mtls.rollout.attributes
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
    description: The CA's name in the store (one path component), also the default common name.
    type: str
    required: true
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
    description: Passphrases of the signers' keys, by CA name (never logged).
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
"""

RETURN = r"""
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


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "pki_dir": module_args.PKI_DIR,
            "backend": module_args.BACKEND,
            "openbao": module_args.OPENBAO,
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
            "issuer_passphrase": {"type": "str", "no_log": True},
            "renew_before_days": {"type": "float"},
            "rotate_key": {"type": "bool", "default": False},
            "crl_url": {"type": "str"},
            "force": {"type": "bool", "default": False},
            "cross_signed_by": {"type": "list", "elements": "str", "default": []},
            "cross_passphrases": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=ENGINE_IMPORT_ERROR)
    p = module.params
    try:
        spec = specs.ca_spec(p["name"], p["subject"], p["issuer"], p["key_type"], p["key_size"], p["curve"],
                             p["valid_days"], p["path_length"], p["name_constraints"], p["renew_before_days"],
                             p["rotate_key"], p["crl_url"])
        store = Store(p["pki_dir"])
        backend = choice.backend(store, p["backend"], p["openbao"])
        if p["cross_signed_by"] and backend.name != "local":
            module.fail_json(msg=f"cross_signed_by is supported with the local backend only (backend {backend.name})")
        for warning in backend.warnings:
            module.warn(warning)
        result = backend.ensure_ca(spec, p["passphrase"], p["issuer_passphrase"], p["force"], module.check_mode)
        pending = module.check_mode and result["action"] == "issued"  # nothing to cross-sign yet
        result["cross"] = [] if pending else [
            cross.ensure_cross(store, spec.name, names.store_name(signer, "cross_signed_by"),
                               (p["cross_passphrases"] or {}).get(signer), check=module.check_mode)
            for signer in p["cross_signed_by"]]
        result["changed"] = result["changed"] or any(c["changed"] for c in result["cross"])
    except PkiError as e:
        module.fail_json(**module_args.fail_json_kwargs(e))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    before = result.pop("before")
    if module._diff:
        result["diff"] = module_args.diff(before, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
