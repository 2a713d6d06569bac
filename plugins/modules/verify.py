#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: verify
short_description: Verify a certificate for server or client use, and explain what is wrong
version_added: 0.1.0
description:
  - Builds and validates the path from a certificate to the given trust anchors, for a purpose
    (V(server) - EKU serverAuth, V(client) - EKU clientAuth), optionally for a host name or IP address, a
    private key (pair match) and a minimum remaining validity.
  - Validation uses C(cryptography.x509.verification) (web-PKI rules; client certificates need no SAN).
    Chains with Ed25519 keys, which that policy does not accept, are checked link by link instead, as
    RV(method) says.
  - Never fails because the certificate is invalid unless O(fail_on_invalid) is set; read RV(valid) and RV(problems).
author: mtls.rollout maintainers (!UNKNOWN)
extends_documentation_fragment:
  - mtls.rollout.attributes
  - mtls.rollout.attributes.in_process
  - mtls.rollout.requirements
attributes:
  check_mode:
    support: full
    description: Read-only; runs in check mode too.
  diff_mode:
    support: none
    description: Nothing to diff.
options:
  certificate:
    description: Path to the PEM certificate. Extra certificates after the first are used as intermediates.
    type: path
  certificate_content:
    description: The PEM certificate itself (instead of O(certificate)).
    type: str
  purpose:
    description: What the certificate must be good for.
    type: str
    choices: [server, client]
    default: server
  ca_file:
    description: PEM file with the trust anchors (root CAs).
    type: path
  ca_content:
    description: Trust anchors as PEM text (instead of, or besides, O(ca_file)).
    type: str
  intermediates:
    description: PEM file with intermediate CAs (e.g. a C(chain.pem)).
    type: path
  hostname:
    description: DNS name the certificate must be valid for (wildcards in the certificate honoured).
    type: str
  ip:
    description: IP address the certificate must be valid for.
    type: str
  private_key:
    description: Path to the private key that must belong to the certificate.
    type: path
  private_key_passphrase:
    description: Passphrase of O(private_key).
    type: str
  min_days_remaining:
    description: Report a problem when fewer days of validity remain.
    type: float
  fail_on_invalid:
    description: Fail the task, listing the problems, when the certificate is not valid.
    type: bool
    default: false
  certificates:
    description:
      - Verify several certificates in one run (for example every server of a play, with C(run_once)) instead of
        the one given by the options above; each item takes those options and an optional O(certificates[].name)
        returned with its result in RV(results).
      - O(fail_on_invalid) applies to every item.
    type: list
    elements: dict
    suboptions:
      name:
        description: A label for the item, returned as is in RV(results) (for example the inventory host).
        type: str
      certificate:
        description: As O(certificate).
        type: path
        required: true
      purpose:
        description: As O(purpose).
        type: str
        choices: [server, client]
        default: server
      ca_file:
        description: As O(ca_file).
        type: path
        required: true
      intermediates:
        description: As O(intermediates).
        type: path
      hostname:
        description: As O(hostname).
        type: str
      ip:
        description: As O(ip).
        type: str
      private_key:
        description: As O(private_key) (a key without a passphrase).
        type: path
      min_days_remaining:
        description: As O(min_days_remaining).
        type: float
seealso:
  - module: mtls.rollout.certificates
"""

EXAMPLES = r"""
- name: Is the server certificate good for access by IP, with its key, for 30 more days?
  mtls.rollout.verify:
    certificate: /srv/pki/certs/web1/cert.pem
    intermediates: /srv/pki/certs/web1/chain.pem
    ca_file: /srv/pki/certs/web1/ca.pem
    ip: 192.0.2.10
    private_key: /srv/pki/certs/web1/key.pem
    min_days_remaining: 30
  register: check

- name: Every server certificate of the play in one run on the control node
  mtls.rollout.verify:
    certificates: "{{ ansible_play_batch | map('extract', hostvars, 'server_check') | list }}"
  run_once: true
  delegate_to: localhost
  register: checks

- name: Fail loudly with the reasons
  ansible.builtin.assert:
    that: check.valid
    fail_msg: "{{ check.problems | map(attribute='message') | join('; ') }}"
"""

RETURN = r"""
valid:
  description: Whether the certificate passed every check.
  returned: without O(certificates)
  type: bool
chain:
  description: Subjects of the validated chain, leaf first, trust anchor last (empty when no path was found).
  returned: without O(certificates)
  type: list
  elements: str
depth:
  description: Number of intermediate CAs between the leaf and the trust anchor - the C(ssl_verify_depth) nginx needs.
  returned: without O(certificates)
  type: int
not_after:
  description: Expiry of the certificate, ISO 8601 UTC.
  returned: without O(certificates)
  type: str
days_remaining:
  description: Days until expiry (negative when expired).
  returned: without O(certificates)
  type: float
problems:
  description: Each problem found, with a stable code and a sentence that says what to do.
  returned: without O(certificates)
  type: list
  elements: dict
  sample: [{code: ip_mismatch, message: "IP address 192.0.2.10 is not in the certificate's subject alternative names"}]
method:
  description: How the path was validated.
  returned: without O(certificates)
  type: str
serial:
  description: Serial number in hex.
  returned: without O(certificates)
  type: str
results:
  description: With O(certificates), one result per item in their order - the item's O(certificates[].name) and
    the results above (RV(valid), RV(problems), ...).
  returned: with O(certificates)
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep
from ansible_collections.mtls.rollout.plugins.module_utils.pki import names
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError

try:  # the PKI engine needs the cryptography library on the control node
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys, pem
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.verify import verify
except ImportError:
    ENGINE_IMPORT_ERROR = traceback.format_exc()
else:  # the module_utils import without cryptography and record what failed
    ENGINE_IMPORT_ERROR = cryptography_dep.import_error()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PkiError(f"cannot read {path}: {e.strerror}", "unreadable") from None


def _verify(p):
    """verify()'s result for one set of options (the module's own, or an item of certificates)."""
    where = p["certificate"] or "certificate_content"
    data = _read(p["certificate"]) if p["certificate"] else p["certificate_content"].encode()
    certs = pem.load_certs(data, where)
    if not certs:
        raise PkiError(f"{where} holds no PEM certificate")
    anchors = pem.load_certs(_read(p["ca_file"]), p["ca_file"]) if p["ca_file"] else []
    anchors += pem.load_certs(p["ca_content"].encode(), "ca_content") if p.get("ca_content") else []
    inter = pem.load_certs(_read(p["intermediates"]), p["intermediates"]) if p["intermediates"] else []
    key = (keys.from_pem(_read(p["private_key"]), p["private_key"], p.get("private_key_passphrase"))
           if p["private_key"] else None)
    ip = str(names.ip_address(p["ip"])) if p["ip"] else None
    return verify(certs[0], p["purpose"], anchors, certs[1:] + inter, p["hostname"], ip, key, p["min_days_remaining"])


def _invalid(result):
    return "; ".join(x["message"] for x in result["problems"])


SPEC = {
    "argument_spec": {
        "certificate": {"type": "path"},
        "certificate_content": {"type": "str"},
        "purpose": {"type": "str", "choices": ["server", "client"], "default": "server"},
        "ca_file": {"type": "path"},
        "ca_content": {"type": "str"},
        "intermediates": {"type": "path"},
        "hostname": {"type": "str"},
        "ip": {"type": "str"},
        "private_key": {"type": "path", "no_log": False},
        "private_key_passphrase": {"type": "str", "no_log": True},
        "min_days_remaining": {"type": "float"},
        "fail_on_invalid": {"type": "bool", "default": False},
        "certificates": {"type": "list", "elements": "dict", "options": {
            "name": {"type": "str"},
            "certificate": {"type": "path", "required": True},
            "purpose": {"type": "str", "choices": ["server", "client"], "default": "server"},
            "ca_file": {"type": "path", "required": True},
            "intermediates": {"type": "path"},
            "hostname": {"type": "str"},
            "ip": {"type": "str"},
            "private_key": {"type": "path", "no_log": False},
            "min_days_remaining": {"type": "float"}}},
    },
    "required_one_of": [("certificate", "certificate_content", "certificates")],
    "mutually_exclusive": [("certificate", "certificate_content", "certificates")],
    "supports_check_mode": True,
}


def run(module):
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=ENGINE_IMPORT_ERROR)
    p = module.params
    if p["certificates"] is None and not (p["ca_file"] or p["ca_content"]):
        module.fail_json(msg="one of the following is required: ca_file, ca_content")
    try:
        if p["certificates"] is not None:
            results = []
            for item in p["certificates"]:
                try:
                    results.append({"name": item["name"], **_verify(item)})
                except PkiError as e:  # this item only: the others are still checked
                    results.append({"name": item["name"], "valid": False, "chain": [], "depth": 0,
                                    "problems": [{"code": e.code, "message": str(e)}]})
            bad = [r for r in results if not r["valid"]]
            if p["fail_on_invalid"] and bad:
                module.fail_json(msg="certificates not valid: " + "; ".join(
                    f"{r['name']}: {_invalid(r)}" for r in bad), results=results)
            module.exit_json(changed=False, results=results)
        result = _verify(p)
    except PkiError as e:
        module.fail_json(msg=str(e), error_code=e.code)
    if p["fail_on_invalid"] and not result["valid"]:
        module.fail_json(msg="certificate not valid: " + _invalid(result), **result)
    module.exit_json(changed=False, **result)


def main():
    run(AnsibleModule(**SPEC))


if __name__ == "__main__":
    main()
