#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_pkcs12
short_description: Build a PKCS#12 bundle on the host from the key made there
version_added: 0.2.0
description:
  - Runs on the managed host (C(mtls_key_location=host)) and bundles the host's own private key, its certificate and
    the CA chain with the host's C(openssl) command, in the same two profiles as the control node's engine -
    V(modern) (AES-256-CBC, PBKDF2-HMAC-SHA256, SHA-256 MAC) and V(compat) (3DES, SHA-1 MAC) - so the key never
    leaves the host to be bundled.
  - Rebuilt only when the certificate, the chain or a setting (password included) changed, recognised from a
    sidecar C(<path>.meta) (0600) without decrypting the bundle.
  - The password reaches openssl on stdin, never on a command line.
author: mtls.rollout maintainers (!UNKNOWN)
requirements:
  - the C(openssl) command (OpenSSL 1.1.1 or later) on the managed host; Python standard library only
extends_documentation_fragment:
  - mtls.rollout.attributes
attributes:
  check_mode:
    support: full
    description: Reports whether the bundle would be built.
  diff_mode:
    support: none
    description: Key material is never shown; the result says what was made.
  idempotent:
    support: full
    description: An unchanged bundle is not rebuilt.
options:
  path:
    description: The bundle to write.
    type: path
    required: true
  private_key:
    description: The host's private key.
    type: path
    required: true
  certificate:
    description: Its certificate (PEM; only the first certificate is used).
    type: path
    required: true
  chain:
    description: CA certificates to include (intermediates and root), when O(include_chain).
    type: path
  include_chain:
    description: Include O(chain).
    type: bool
    default: true
  friendly_name:
    description: The name browsers, keychains and keystores show.
    type: str
    required: true
  password:
    description: Bundle password (never logged). Empty - an unencrypted bundle.
    type: str
    default: ''
  encryption:
    description:
      - V(modern) or V(compat) (older macOS, Windows and Java keystores).
      - V(modern) is AES-256-CBC, HMAC-SHA256 and 20000 key derivation rounds; OpenSSL 1.1.1 (Debian 11)
        cannot set the rounds and uses 2048, with a warning.
    type: str
    choices: [modern, compat]
    default: modern
  mode:
    description: Octal mode of the bundle.
    type: str
    default: '0600'
  owner:
    description: Owner of the bundle.
    type: str
  group:
    description: Group of the bundle.
    type: str
seealso:
  - module: mtls.rollout.host_key
"""

EXAMPLES = r"""
- name: Bundle the client's own key for browsers and keystores
  mtls.rollout.host_pkcs12:
    path: /etc/mtls/client/client.p12
    private_key: /etc/mtls/client/key.pem
    certificate: /etc/mtls/client/cert.pem
    chain: /etc/mtls/client/chain-and-root.pem
    friendly_name: alice
    password: "{{ vault_p12_password }}"
    encryption: compat
"""

RETURN = r"""
reason:
  description: Why the bundle was (or would be) built; empty when it was current.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtls.rollout.plugins.module_utils.host import file_set, openssl, pkcs12_bundle


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "private_key": {"type": "path", "required": True, "no_log": False},
            "certificate": {"type": "path", "required": True},
            "chain": {"type": "path"},
            "include_chain": {"type": "bool", "default": True},
            "friendly_name": {"type": "str", "required": True},
            "password": {"type": "str", "default": "", "no_log": True},
            "encryption": {"type": "str", "choices": ["modern", "compat"], "default": "modern"},
            "mode": {"type": "str", "default": "0600"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        mode = int(p["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"invalid mode {p['mode']!r}: use an octal string such as '0600'")
    try:
        result = pkcs12_bundle.ensure(p["path"], p["private_key"], p["certificate"], p["chain"], p["friendly_name"],
                                      p["password"], p["encryption"], p["include_chain"], mode, p["owner"], p["group"],
                                      module.check_mode)
    except (openssl.OpenSSLError, file_set.FileSetError, OSError) as e:
        module.fail_json(msg=str(e), changed=False)
    if result["changed"] and p["password"] and p["encryption"] == "modern" and openssl.pkcs12_iterations_fixed():
        module.warn(f"{p['path']}: this host's OpenSSL 1.1.1 cannot set PKCS#12 iterations: the bundle is "
                    "AES-256/SHA-256 with 2048 key derivation rounds, not the modern profile's 20000")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
