#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_key
short_description: Make a private key on the host that uses it and report a CSR, never the key
version_added: 0.2.0
description:
  - Runs on the managed host (C(mtls_key_location=host)). Makes the key at O(path) if there is none (EC P-256 by
    default; P-384, P-521, RSA 2048/3072/4096, Ed25519), atomically, with O(mode) and O(owner) from the first
    byte, and returns a certificate signing request for it plus what the host holds now - the installed
    certificate, and whether it belongs to the key. The control node (M(mtls.rollout.certificates)) decides
    renewal from that with its usual policy and signs the CSR's public key; only certificates travel.
  - A replacement key (O(rotate), or a changed O(key_type)) is made at C(<path>.next) and its CSR returned,
    while the key in use stays until the new certificate is installed with it in one validated change
    (M(mtls.rollout.install_files) with O(mtls.rollout.install_files#module:files[].source)).
  - A key file that cannot be read (corrupted, encrypted, truncated, a symlink) fails the task naming the host
    and the path; it is never replaced.
  - Needs only the Python standard library and the C(openssl) command (OpenSSL 1.1.1 or later) on the host.
author: mtls.rollout maintainers (!UNKNOWN)
requirements:
  - the C(openssl) command (OpenSSL 1.1.1 or later) on the managed host; Python standard library only
extends_documentation_fragment:
  - mtls.rollout.attributes
attributes:
  check_mode:
    support: full
    description: Reports whether a key would be made; the CSR of an existing key is returned, none for a key not made yet.
  diff_mode:
    support: none
    description: Key material is never shown; the result says what was made.
  idempotent:
    support: full
    description: A second run makes no key and no CSR.
options:
  path:
    description: Absolute path of the private key (PKCS#8 PEM).
    type: path
    required: true
  key_type:
    description: V(ec) (default), V(rsa) or V(ed25519).
    type: str
    choices: [ec, rsa, ed25519]
    default: ec
  key_size:
    description: RSA size (2048, 3072, 4096; default 3072) or EC size (256, 384, 521).
    type: int
  curve:
    description: EC curve, V(P-256) (default), V(P-384) or V(P-521).
    type: str
  mode:
    description: Octal mode of the key file (V('0400') for a server key nginx reads as root).
    type: str
    default: '0600'
  owner:
    description: Owner of the key file.
    type: str
  group:
    description: Group of the key file.
    type: str
  dir_mode:
    description: Mode of a directory created for the key.
    type: str
    default: '0700'
  rotate:
    description: Make a new key at C(<path>.next) (unless one is pending) and report its CSR.
    type: bool
    default: false
  certificate_path:
    description: The certificate installed for this key (a fullchain is fine), reported back to the control node.
    type: path
  common_name:
    description: Common name put in the CSR (informational - the signer takes names from the inventory).
    type: str
seealso:
  - module: mtls.rollout.certificates
  - module: mtls.rollout.install_files
  - module: mtls.rollout.host_pkcs12
"""

EXAMPLES = r"""
- name: The server's key, made on the server (0400, root), and its CSR
  mtls.rollout.host_key:
    path: /etc/nginx/mtls/key.pem
    mode: '0400'
    owner: root
    certificate_path: /etc/nginx/mtls/fullchain.pem
  register: server_key

- name: Rotate the key (the new one waits at key.pem.next until its certificate is installed)
  mtls.rollout.host_key:
    path: /etc/mtls/client/key.pem
    certificate_path: /etc/mtls/client/cert.pem
    rotate: true
"""

RETURN = r"""
csr:
  description: PEM certificate request for the key to certify (the pending one while rotating). Null in check mode for a key not made yet.
  returned: always
  type: str
key_type:
  description: The key's type, e.g. V(ec P-256), V(rsa 3072), V(ed25519).
  returned: always
  type: str
created:
  description: Key files made by this run.
  returned: always
  type: list
  elements: str
rotating:
  description: A replacement key waits at RV(pending_path) for its certificate.
  returned: always
  type: bool
pending_path:
  description: Path of the replacement key, when rotating.
  returned: always
  type: str
certificate:
  description: PEM of the first certificate in O(certificate_path) (only certificates ever leave the host), or null.
  returned: always
  type: str
certificate_unreadable:
  description: O(certificate_path) exists but holds no readable certificate.
  returned: always
  type: bool
certificate_matches_key:
  description: The installed certificate carries the public key of the key at O(path).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtls.rollout.plugins.module_utils.host import host_key, openssl


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "key_type": {"type": "str", "choices": ["ec", "rsa", "ed25519"], "default": "ec"},
            "key_size": {"type": "int"},
            "curve": {"type": "str"},
            "mode": {"type": "str", "default": "0600"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "dir_mode": {"type": "str", "default": "0700"},
            "rotate": {"type": "bool", "default": False},
            "certificate_path": {"type": "path"},
            "common_name": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        spec = openssl.key_spec(p["key_type"], p["key_size"], p["curve"])
        mode, dir_mode = int(p["mode"], 8), int(p["dir_mode"], 8)
    except ValueError:
        module.fail_json(msg=f"invalid mode {p['mode']!r} or dir_mode {p['dir_mode']!r}: use octal strings such as '0600'")
    except openssl.OpenSSLError as e:
        module.fail_json(msg=str(e))
    try:
        result = host_key.ensure(p["path"], spec, mode, p["owner"], p["group"], dir_mode, p["rotate"],
                                 p["certificate_path"], p["common_name"] or "", module.check_mode)
    except (host_key.HostKeyError, openssl.OpenSSLError, OSError) as e:
        module.fail_json(msg=str(e), changed=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
