# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CA backend options every CA-facing module shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  backend:
    description:
      - Where the CAs live. V(local) - in O(pki_dir) (keys in files, the issuance record in C(index.json)).
        V(openbao) - in OpenBao's (or HashiCorp Vault's) PKI secrets engine, one mount per CA
        (C(<mount_prefix><ca name>)); O(pki_dir) is then only a cache of CA certificates, chains and CRLs for
        the roles, and may start empty every run.
    type: str
    choices: [local, openbao]
    default: local
  openbao:
    description: How to reach OpenBao, with O(backend=openbao).
    type: dict
    suboptions:
      addr:
        description:
          - The URL of OpenBao (V(https://bao.example.com:8200)), or a list of the URLs of its cluster nodes
            (requests move on to the next node on connection errors, 5xx, sealed or standby nodes).
        type: raw
        required: true
      ca_cert:
        description: PEM file of the CA that issued OpenBao's TLS certificate (default the system's trust store).
        type: path
      token:
        description:
          - A token. Default the environment's C(BAO_TOKEN), else C(VAULT_TOKEN). Never logged.
          - Leave empty with O(openbao.role_id) and O(openbao.secret_id) (AppRole).
        type: str
      role_id:
        description: AppRole role ID (with O(openbao.secret_id); the token is then obtained by C(auth/approle/login)).
        type: str
      secret_id:
        description: AppRole secret ID. Never logged.
        type: str
      namespace:
        description: OpenBao / Vault Enterprise namespace (sent as C(X-Vault-Namespace)).
        type: str
      mount_prefix:
        description: Prefix of the PKI mounts, e.g. V(mtls/) makes CA C(root) the mount C(mtls/root).
        type: str
        default: ""
      insecure:
        description: Do not verify OpenBao's TLS certificate (says so in a warning). Use O(openbao.ca_cert) instead.
        type: bool
        default: false
"""
