#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: crl
short_description: Revoke certificates and keep the CAs' certificate revocation lists current
version_added: 0.1.0
description:
  - Revokes certificates of the store by name (O(revoke)) or serial number (O(revoke_serials)) - their records in
    C(index.json) are marked C(revoked) with the time and O(reason), under the store's lock, written atomically.
    Revoking a name revokes every certificate of that name that has not expired yet (the current one and any
    older one it replaced). Revoking what is already revoked changes nothing.
  - Writes the CRL of each CA concerned to C(ca/<name>/crl.pem) - the issuers of the certificates revoked, the CAs in
    O(cas), and with O(include_parents) every CA above them - signed with the CA's key, with a CRL number that
    increases with every signing, the authority key identifier, and C(nextUpdate) O(valid_days) after
    C(thisUpdate). Revoked certificates that have expired leave the CRL.
  - "A CRL is signed again only for a reason, which the result names: V(missing), V(unreadable), V(issuer_changed)
    (the CA was re-issued or re-keyed), V(content_changed), V(expired), V(due: N days left) (inside the refresh
    window, by default the last third of its validity) or V(forced). So a run that finds nothing to do changes
    nothing, and runs at least every two thirds of O(valid_days) (site.yml, renew.yml) refresh it before nginx
    would reject every client with C(CRL has expired)."
  - With O(verify_only), writes nothing and fails unless every CRL named exists, is signed by its CA as it is now, is
    within its validity and lists every revocation of the index - the check the nginx role runs before it
    publishes C(ssl_crl).
  - With O(backend=openbao) the certificates are revoked in OpenBao (C(<mount>/revoke)), by serial or by name (the
    cached record of that name, else every unexpired leaf of O(cas) whose common name is the name); the CRLs are
    OpenBao's (its C(config/crl) expiry set to O(valid_days), re-signed through C(crl/rotate) in the refresh window)
    and are cached in C(ca/<name>/crl.pem) with the revocations they list, for O(verify_only). OpenBao's CRL entries
    carry no reason code.
author: mtls.rollout maintainers (!UNKNOWN)
extends_documentation_fragment:
  - mtls.rollout.store
  - mtls.rollout.backend
  - mtls.rollout.attributes
  - mtls.rollout.attributes.in_process
  - mtls.rollout.requirements
attributes:
  check_mode:
    support: full
    description: Reports what would be revoked and which CRLs would be signed, and why; writes nothing.
  diff_mode:
    support: full
    description: Shows the revocations and each CRL's number and entry count before and after.
options:
  revoke:
    description: Names of certificates in the store to revoke (leaf names such as V(client2), or an intermediate CA's name).
    type: list
    elements: str
    default: []
  revoke_serials:
    description: Serial numbers to revoke, in hex (V(3f1a...) or V(3F:1A:...)), as the index and C(openssl x509 -serial) show them.
    type: list
    elements: str
    default: []
  reason:
    description: Revocation reason recorded in the index and on the CRL (V(unspecified) leaves the reason code out, as RFC 5280 asks).
    type: str
    choices: [unspecified, key_compromise, ca_compromise, affiliation_changed, superseded, cessation_of_operation,
              privilege_withdrawn]
    default: unspecified
  cas:
    description: CAs whose CRL to write or refresh, besides the issuers of the certificates revoked. With no
      O(revoke) nor O(revoke_serials), this alone (re)writes CRLs.
    type: list
    elements: str
    default: []
  include_parents:
    description: Also every CA above those (up to the root) - what nginx needs, since it checks a CRL at every level of a client chain.
    type: bool
    default: false
  valid_days:
    description: Validity of a CRL signed now (C(nextUpdate) minus C(thisUpdate)). A changed value applies at the next signing.
    type: float
    default: 7
  refresh_before_days:
    description: Sign again when fewer days than this remain before C(nextUpdate). Default - the last third of the CRL's validity.
    type: float
  passphrase:
    description: Passphrase of the CA keys (for every CA without an entry in O(passphrases)).
    type: str
  passphrases:
    description: Passphrase per CA name, for hierarchies whose CAs have different passphrases.
    type: dict
  force:
    description: Sign every CRL named again now.
    type: bool
    default: false
  verify_only:
    description: Write nothing; fail, listing the problems, unless the CRL of each CA in O(cas) (and above, with
      O(include_parents)) is present and current. O(revoke) and O(revoke_serials) must then be empty.
    type: bool
    default: false
seealso:
  - module: mtls.rollout.ca
  - module: mtls.rollout.probe
"""

EXAMPLES = r"""
- name: Revoke client2 and refresh the CRL of every CA level (run on the control node)
  mtls.rollout.crl:
    pki_dir: /srv/pki
    revoke: [client2]
    reason: key_compromise
    cas: [root, server-ca, client-ca]
    passphrase: "{{ vault_ca_passphrase }}"

- name: Revoke by serial
  mtls.rollout.crl:
    pki_dir: /srv/pki
    revoke_serials: ["5A:3F:09:1C:77"]
    passphrase: "{{ vault_ca_passphrase }}"

- name: Keep the CRLs of the client chain current (renewal runs)
  mtls.rollout.crl:
    pki_dir: /srv/pki
    cas: [client-ca]
    include_parents: true
    valid_days: 7
    passphrase: "{{ vault_ca_passphrase }}"

- name: Check before publishing (writes nothing)
  mtls.rollout.crl:
    pki_dir: /srv/pki
    cas: [client-ca]
    include_parents: true
    verify_only: true
  register: crls
"""

RETURN = r"""
revoked:
  description: One entry per certificate revoked (or found revoked already).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Its name in the store.
      type: str
    serial:
      description: Serial number, lower-case hex.
      type: str
    issuer:
      description: Name of the issuing CA.
      type: str
    action:
      description: V(revoked), or V(already_revoked) (nothing changed).
      type: str
    revoked_at:
      description: Revocation time, ISO 8601 UTC.
      type: str
    reason:
      description: Revocation reason.
      type: str
crls:
  description: One entry per CA whose CRL was written, refreshed, checked or left alone, in O(cas) order (issuers before the CAs above them).
  returned: always
  type: list
  elements: dict
  contains:
    ca:
      description: CA name.
      type: str
    path:
      description: Path of C(crl.pem).
      type: str
    action:
      description: V(issued), V(refreshed) or V(unchanged) (absent with O(verify_only)).
      type: str
    reason:
      description: Why it was (or would be) signed, V(; )-joined.
      type: str
    number:
      description: CRL number.
      type: int
    this_update:
      description: thisUpdate, ISO 8601 UTC.
      type: str
    next_update:
      description: nextUpdate, ISO 8601 UTC.
      type: str
    revoked_count:
      description: Entries on the CRL.
      type: int
crl_files:
  description: Paths of the CRLs, in the order of RV(crls) - what an nginx C(ssl_crl) file concatenates.
  returned: always
  type: list
  elements: str
problems:
  description: With O(verify_only) - each CRL that is missing or not current, as C(code), C(ca) and a sentence.
  returned: when verify_only
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep
from ansible_collections.mtls.rollout.plugins.module_utils import module_args
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends import choice

try:  # the PKI engine needs the cryptography library on the control node
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import crl
except ImportError:
    ENGINE_IMPORT_ERROR = traceback.format_exc()
else:  # the module_utils import without cryptography and record what failed
    ENGINE_IMPORT_ERROR = cryptography_dep.import_error()

REASONS = ["unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
           "cessation_of_operation", "privilege_withdrawn"]


def _diff(result):
    def line(c, before):
        facts = c.get("before") if before else c
        if not facts or facts.get("number") is None:
            return f"{c['ca']}: no CRL\n" if before or not c.get("changed") else f"{c['ca']}: new CRL\n"
        return f"{c['ca']}: CRL number {facts['number']}, {facts['revoked_count']} revoked, next update {facts['next_update']}\n"
    revoked = "".join(f"revoked {r['name']} serial {r['serial']} ({r['reason']})\n" for r in result["revoked"]
                      if r["action"] == "revoked")
    return {"before": "".join(line(c, True) for c in result["crls"]),
            "after": revoked + "".join(line(c, False) for c in result["crls"])}


SPEC = {
    "argument_spec": {
        "pki_dir": module_args.PKI_DIR,
        "backend": module_args.BACKEND,
        "openbao": module_args.OPENBAO,
        "revoke": {"type": "list", "elements": "str", "default": []},
        "revoke_serials": {"type": "list", "elements": "str", "default": []},
        "reason": {"type": "str", "choices": REASONS, "default": "unspecified"},
        "cas": {"type": "list", "elements": "str", "default": []},
        "include_parents": {"type": "bool", "default": False},
        "valid_days": {"type": "float", "default": 7},
        "refresh_before_days": {"type": "float"},
        "passphrase": {"type": "str", "no_log": True},
        "passphrases": {"type": "dict", "no_log": True},
        "force": {"type": "bool", "default": False},
        "verify_only": {"type": "bool", "default": False},
    },
    "supports_check_mode": True,
}


def run(module):
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=ENGINE_IMPORT_ERROR)
    p = module.params
    store = Store(p["pki_dir"])
    try:
        backend = choice.backend(store, p["backend"], p["openbao"])
        for warning in backend.warnings:
            module.warn(warning)
        if p["verify_only"]:
            if p["revoke"] or p["revoke_serials"]:
                module.fail_json(msg="verify_only writes nothing: leave revoke and revoke_serials empty")
            result = crl.check(store, p["cas"], p["include_parents"])
            for warning in result.pop("warnings"):
                module.warn(warning)
            if result["problems"]:
                module.fail_json(msg="CRLs not current: " + "; ".join(x["message"] for x in result["problems"]),
                                 changed=False, **result)
            module.exit_json(changed=False, revoked=[], **result)
        passphrases = {k: v for k, v in (p["passphrases"] or {}).items() if v}
        if p["passphrase"]:
            passphrases[None] = p["passphrase"]
        result = backend.revoke(p["revoke"], p["revoke_serials"], p["reason"], p["cas"], module.check_mode,
                                include_parents=p["include_parents"], passphrases=passphrases,
                                valid_days=p["valid_days"], refresh_before_days=p["refresh_before_days"],
                                force=p["force"])
    except PkiError as e:
        module.fail_json(**module_args.fail_json_kwargs(e))
    if module._diff:
        result["diff"] = _diff(result)
    for c in result["crls"]:
        c.pop("before", None)
    module.exit_json(**result)


def main():
    run(AnsibleModule(**SPEC))


if __name__ == "__main__":
    main()
