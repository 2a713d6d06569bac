#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: certificates
short_description: Issue or renew a list of leaf certificates from one CA in a single task
version_added: 0.1.0
description:
  - Ensures every certificate in O(certificates), all issued by the CA O(issuer), under one lock and in
    one pass - issuing 1000 client certificates is one module run, not 1000.
  - Profiles - V(server) (EKU serverAuth), V(client) (EKU clientAuth), V(both). SAN from O(certificates[].dns)
    (wildcards such as V(*.example.com) allowed), O(certificates[].ip) (IPv4 and IPv6) and
    O(certificates[].email). A server's common name is added to the SAN too, since clients only look there.
  - Writes C(certs/<name>/cert.pem), C(key.pem) (0600), C(chain.pem) (the intermediates), C(fullchain.pem)
    (leaf then intermediates, the order nginx needs), C(ca.pem) (the root) and, when O(certificates[].pkcs12)
    is set, C(bundle.p12) (0600).
  - "A certificate is re-issued only for a reason, which the result names - V(missing), V(unreadable),
    V(key_missing), V(key_mismatch), V(key_reused), V(spec_changed: dns, ip), V(issuer_changed), V(outlives_issuer),
    V(due: N days left), V(expired), V(forced), and for keys made on hosts V(key_rotation), V(key_location_changed).
    The key is kept on re-issue unless the key type changed, it does not match the certificate, it is another
    leaf's or O(certificates[].rotate_key) is set. Otherwise nothing is touched and no key is generated or signed."
  - A leaf never outlives its issuer - its lifetime is clipped to the issuer's expiry, with a warning.
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
    description: Reports per certificate what would be issued and why, writes nothing.
  diff_mode:
    support: full
    description: Shows serial, subject and validity before and after for each changed certificate.
options:
  issuer:
    description: Name of the issuing CA in the store (created with M(mtls.rollout.ca)).
    type: str
    required: true
  issuer_passphrase:
    description: Passphrase of the issuer's key, when it is encrypted.
    type: str
  certificates:
    description: The certificates to ensure. Each item takes the options below; unset ones come from O(defaults).
    type: list
    elements: dict
    required: true
    suboptions: &leaf_options
      name:
        description:
          - Name in the store (one path component); also the PKCS#12 friendly name by default.
          - Required in every item of O(certificates); not allowed in O(defaults).
        type: str
      profile:
        description: V(server), V(client) or V(both) (serverAuth and clientAuth). Default V(server).
        type: str
        choices: [server, client, both]
      common_name:
        description: Subject CN. Optional for servers with O(certificates[].dns); added to the SAN for servers.
        type: str
      organization:
        description: Subject O.
        type: str
      organizational_unit:
        description: Subject OU.
        type: str
      country:
        description: Subject C (two letters).
        type: str
      state:
        description: Subject ST.
        type: str
      locality:
        description: Subject L.
        type: str
      subject:
        description: Subject fields as a dict (same keys as above); the flat options win.
        type: dict
      dns:
        description: DNS names for the SAN. A wildcard is allowed as the whole left-most label.
        type: list
        elements: str
      ip:
        description: IP addresses (IPv4, IPv6) for the SAN, so access by address verifies.
        type: list
        elements: str
      email:
        description: E-mail addresses for the SAN.
        type: list
        elements: str
      key_type:
        description: V(ec) (default), V(rsa) or V(ed25519).
        type: str
        choices: [ec, rsa, ed25519]
      key_size:
        description: RSA size (2048, 3072, 4096; default 3072) or EC curve size (256, 384, 521).
        type: int
      curve:
        description: EC curve, V(P-256) (default) or V(P-384), V(P-521).
        type: str
      valid_days:
        description: Lifetime in days (default 365).
        type: float
      renew_before_days:
        description: Re-issue when fewer days remain; overrides the task-level O(renew_before_days).
        type: float
      rotate_key:
        description: Generate a new key whenever the certificate is re-issued.
        type: bool
      force:
        description: Re-issue this certificate now.
        type: bool
      key_location:
        description:
          - Where the key is made and kept. V(controller) (default) - in the store, pushed to hosts by the roles.
            V(host) - on the host that uses it (M(mtls.rollout.host_key)), which sends O(certificates[].csr); the
            store then holds no key and no bundle for it, and renewal is decided from what the host reports.
          - Switching from V(controller) to V(host) re-issues with reason V(key_location_changed) and removes the
            pushed key (and bundle) from the store; a host offering the key that was pushed is refused.
        type: str
        choices: [controller, host]
      crl_url:
        description:
          - A plain C(http://) base URL; the certificate then carries a CRL distribution point
            C(<crl_url><issuer>.crl) and an AIA caIssuers C(<crl_url><issuer>.crt). A changed URL re-issues (reason
            V(spec_changed) naming C(crl_url)).
        type: str
      csr:
        description:
          - With O(certificates[].key_location=host), the host's CSR (PEM). Only its public key is used, once its
            signature verifies; the names, extensions and key usages it asks for are ignored.
        type: str
      held_certificate:
        description: With O(certificates[].key_location=host), the certificate the host has installed now (PEM), or empty.
        type: str
      rotating:
        description: With O(certificates[].key_location=host), the CSR is for a new key replacing the one in use
          (reason V(key_rotation)).
        type: bool
      pkcs12:
        description:
          - Also write C(bundle.p12) with key, certificate and chain (controller keys; a host key's bundle is built
            on the host by M(mtls.rollout.host_pkcs12)).
        type: dict
        suboptions:
          password:
            description: Bundle password (never logged). Empty means an unencrypted bundle.
            type: str
          encryption:
            description:
              - V(modern) - AES-256-CBC, PBKDF2-HMAC-SHA256, SHA-256 MAC (OpenSSL 3, current browsers and OSes).
              - V(compat) - 3DES, SHA-1 MAC, for older macOS, Windows and Java keystores.
            type: str
            choices: [modern, compat]
          friendly_name:
            description: The bundle's friendly name (alias in keystores). Default the certificate's name.
            type: str
          include_chain:
            description: Include the intermediates and the root (default true).
            type: bool
  defaults:
    description: Values for any item option an item leaves unset (O(certificates[].name) excepted).
    type: dict
    suboptions: *leaf_options
  renew_before_days:
    description: Re-issue when fewer days than this remain. Default - the last third of each certificate's lifetime.
    type: float
  force:
    description: Re-issue every certificate in the list now.
    type: bool
    default: false
  results:
    description:
      - V(all) - RV(certificates) has one entry per requested certificate.
      - V(changed) - only the certificates that changed (issued, renewed, updated) or were refused; RV(summary)
        still counts all.
        For lists of thousands, where the result of a run with little to do is mostly unchanged entries (at
        10,000 about 9 MB that Ansible scrubs for no_log values, serializes and registers).
    type: str
    choices: [all, changed]
    default: all
seealso:
  - module: mtls.rollout.ca
  - module: mtls.rollout.verify
"""

EXAMPLES = r"""
- name: Server certificates, wildcard and IP in the SAN
  mtls.rollout.certificates:
    pki_dir: /srv/pki
    issuer: server-ca
    certificates:
      - name: web1
        common_name: web1.example.com
        dns: ["*.example.com", example.com]
        ip: [192.0.2.10, "2001:db8::10"]

- name: A thousand client identities with PKCS#12 bundles, in one task
  mtls.rollout.certificates:
    pki_dir: /srv/pki
    issuer: client-ca
    defaults:
      profile: client
      organization: Example Ltd
      pkcs12:
        password: "{{ vault_p12_password }}"
        encryption: compat
    # people: [{name: alice, common_name: alice, email: [alice@example.com]}, ...]
    certificates: "{{ people }}"
  register: issued

- name: Show what changed and why
  ansible.builtin.debug:
    msg: "{{ issued.certificates | selectattr('changed') | map(attribute='reason') | list }}"
"""

RETURN = r"""
certificates:
  description: One entry per requested certificate, in order (with O(results=changed), the changed ones only). Never
    contains key material or passwords.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The certificate's name.
      type: str
    action:
      description:
        - V(issued), V(renewed), V(updated) (only chain files or the bundle rewritten) or V(unchanged).
        - V(refused) when what the host sent for a key kept on the host cannot be certified (no or a bad CSR, a
          key of another type than the item's, the key the control node had made for it, another certificate's
          key). That item alone fails, RV(certificates[].msg) says why, and nothing of it is written, while the
          others are issued as usual. The site and renew playbooks fail the host whose item was refused.
      type: str
    failed:
      description: True for a refused item (absent otherwise).
      type: bool
      returned: when refused
    msg:
      description: Why the item was refused, and what to do.
      type: str
      returned: when refused
    reason:
      description: Why, V(; )-joined (empty when unchanged).
      type: str
      sample: "spec_changed: dns"
    serial:
      description: Serial in hex (absent in check mode for a certificate that would be issued).
      type: str
    not_after:
      description: Expiry, ISO 8601 UTC.
      type: str
    fingerprint_sha256:
      description: SHA-256 fingerprint.
      type: str
    paths:
      description: C(cert), C(key) (controller keys), C(chain), C(fullchain), C(ca) and, with a bundle, C(pkcs12).
      type: dict
    key_location:
      description: V(controller) or V(host).
      type: str
summary:
  description: How many certificates ended in each action.
  returned: always
  type: dict
  sample: {issued: 2, renewed: 1, updated: 0, unchanged: 997, refused: 0}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep
from ansible_collections.mtls.rollout.plugins.module_utils import module_args
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends import choice

try:  # the PKI engine needs the cryptography library on the control node
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import csr, specs
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
except ImportError:
    ENGINE_IMPORT_ERROR = traceback.format_exc()
else:  # the module_utils import without cryptography and record what failed
    ENGINE_IMPORT_ERROR = cryptography_dep.import_error()

HOST_REPORT = ("csr", "held_certificate", "rotating")


def _host_report(name, item, check):
    """What the host sent, or the PkiError that refuses it: that fails this item only (ensure_leaves)."""
    try:
        return csr.host_report(name, item["csr"], item["held_certificate"], item["rotating"], check)
    except PkiError as e:
        return e


SPEC = {
    "argument_spec": module_args.CERTIFICATES,
    "supports_check_mode": True,
}


def run(module):
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=ENGINE_IMPORT_ERROR)
    p = module.params
    defaults = p["defaults"] or {}
    try:
        items = [{k: v for k, v in item.items() if k not in HOST_REPORT} for item in p["certificates"]]
        leaf_specs = [specs.leaf_spec(item, defaults) for item in items]
        reports = {spec.name: _host_report(spec.name, item, module.check_mode)
                   for spec, item in zip(leaf_specs, p["certificates"]) if spec.key_location == "host"}
        store = Store(p["pki_dir"])
        backend = choice.backend(store, p["backend"], p["openbao"])
        for warning in backend.warnings:
            module.warn(warning)
        results = ensure_leaves(store, p["issuer"], leaf_specs, p["issuer_passphrase"], p["renew_before_days"],
                                p["force"], module.check_mode, reports=reports, backend=backend)
    except PkiError as e:
        module.fail_json(**module_args.fail_json_kwargs(e))
    summary = dict.fromkeys(("issued", "renewed", "updated", "unchanged", "refused"), 0)
    diffs = []
    for r in results:
        summary[r["action"]] += 1
        if r.get("failed"):
            module.warn(f"certificate {r['name']!r} refused: {r['msg']}")
        for warning in r.pop("warnings"):
            module.warn(warning)
        before = r.pop("before")
        if r["changed"]:
            diffs.append(module_args.diff(before, r))
    out = {"changed": any(r["changed"] for r in results), "summary": summary,
           "certificates": results if p["results"] == "all"
           else [r for r in results if r["changed"] or r.get("failed")],
           "invocation": module_args.invocation(p, "certificates")}
    if module._diff and diffs:
        out["diff"] = diffs
    module.exit_json(**out)


def main():
    run(AnsibleModule(**SPEC))


if __name__ == "__main__":
    main()
