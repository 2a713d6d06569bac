#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_java_store
short_description: Write a Java truststore or keystore on the host with its keytool
version_added: 0.2.0
description:
  - Runs on the managed host and writes, with the host's C(keytool), either a B(truststore) holding the given CA
    certificates as trusted entries (O(certificates)) or a B(keystore) holding the identity of a PKCS#12 bundle
    already on the host (O(bundle); for host keys the bundle was built there, so the key never travels).
  - PKCS12 (Java's default keystore type since Java 9) or JKS. The new store replaces the old one atomically.
  - Rebuilt only when the certificates, the bundle or a setting (passwords included) changed, recognised from a
    sidecar C(<path>.meta) (0600) without opening the store.
  - Passwords reach keytool in a file in a private 0700 directory (C(-storepass:file)), never on a command line.
author: mtls.rollout maintainers (!UNKNOWN)
requirements:
  - the C(keytool) command (any Java 8 or later runtime) on the managed host; Python standard library only
extends_documentation_fragment:
  - mtls.rollout.attributes
attributes:
  check_mode:
    support: full
    description: Reports whether the store would be written.
  diff_mode:
    support: none
    description: Stores are binary; the result says why one was written.
  idempotent:
    support: full
    description: An unchanged store is not rebuilt.
options:
  path:
    description: The store to write.
    type: path
    required: true
  type:
    description: V(pkcs12) or V(jks).
    type: str
    choices: [pkcs12, jks]
    default: pkcs12
  password:
    description: Store password (never logged), 6 characters or more (keytool's minimum).
    type: str
    required: true
  certificates:
    description: A truststore - the trusted certificates.
    type: list
    elements: dict
    suboptions:
      alias:
        description: The entry's alias.
        type: str
        required: true
      pem:
        description: The certificate (PEM).
        type: str
        required: true
  bundle:
    description: A keystore - the PKCS#12 bundle whose key and certificates go into it.
    type: path
  bundle_password:
    description: Password of O(bundle) (never logged).
    type: str
    default: ''
  mode:
    description: Octal mode of the store.
    type: str
    default: '0600'
  owner:
    description: Owner of the store.
    type: str
  group:
    description: Group of the store.
    type: str
seealso:
  - module: mtls.rollout.host_pkcs12
"""

EXAMPLES = r"""
- name: A PKCS12 truststore holding the fleet's root
  mtls.rollout.host_java_store:
    path: /etc/mtls/client/truststore.p12
    password: "{{ vault_truststore_password }}"
    certificates:
      - alias: mtls-rollout-root
        pem: "{{ lookup('ansible.builtin.file', 'root.pem') }}"

- name: A JKS keystore with the client's identity
  mtls.rollout.host_java_store:
    path: /etc/mtls/client/keystore.jks
    type: jks
    password: "{{ vault_keystore_password }}"
    bundle: /etc/mtls/client/client.p12
    bundle_password: "{{ vault_p12_password }}"
"""

RETURN = r"""
reason:
  description: Why the store was (or would be) written; empty when it was current.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtls.rollout.plugins.module_utils.host import file_set, java_store


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "type": {"type": "str", "choices": ["pkcs12", "jks"], "default": "pkcs12"},
            "password": {"type": "str", "required": True, "no_log": True},
            "certificates": {"type": "list", "elements": "dict", "options": {
                "alias": {"type": "str", "required": True}, "pem": {"type": "str", "required": True}}},
            "bundle": {"type": "path"},
            "bundle_password": {"type": "str", "default": "", "no_log": True},
            "mode": {"type": "str", "default": "0600"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
        },
        mutually_exclusive=[("certificates", "bundle")],
        required_one_of=[("certificates", "bundle")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        mode = int(p["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"invalid mode {p['mode']!r}: use an octal string such as '0600'")
    certificates = [(c["alias"], c["pem"]) for c in p["certificates"]] if p["certificates"] is not None else None
    if certificates == []:
        module.fail_json(msg="certificates is empty: a truststore needs at least one certificate")
    try:
        result = java_store.ensure(p["path"], p["type"], p["password"], certificates, p["bundle"],
                                   p["bundle_password"], mode, p["owner"], p["group"], module.check_mode)
    except (java_store.JavaStoreError, file_set.FileSetError, OSError) as e:
        module.fail_json(msg=str(e), changed=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
