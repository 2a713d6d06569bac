#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: report
short_description: Expiry report of every certificate in the PKI store
version_added: 0.1.0
description:
  - Lists every CA and leaf certificate of the store, sorted by days left, with its hosts, serial, expiry and
    a status - V(expired), V(revoked), V(expiring) (within O(warn_days)), V(due) (inside its renewal window,
    the next renewal run re-issues it) or V(ok).
  - Optionally writes the report as JSON and as a self-contained HTML page (no scripts, no external resources).
  - Read-only towards the store; the report files are outputs and do not count as a change.
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
    description: Reads only; writes the report files in check mode too, since they are outputs.
  diff_mode:
    support: none
    description: Nothing to diff.
options:
  hosts:
    description: Certificate name to the inventory hosts that hold it (see the C(mtls.rollout.certificate_hosts) filter).
    type: dict
    default: {}
  cas:
    description:
      - With O(backend=openbao), the CAs (names in C(mtls_cas)) whose certificates are listed, each from its mount's
        C(certs) (the newest certificate per subject). Ignored by the local backend, which lists the store.
    type: list
    elements: str
    default: []
  warn_days:
    description: Certificates with fewer days left are reported as V(expiring).
    type: float
    default: 30
  json_path:
    description: Write the report as JSON here.
    type: path
  html_path:
    description:
      - Write the report as an HTML page here, self-contained (no scripts or network fetches) - a timeline (a bar
        per certificate from not-before to not-after, the renewal window hatched, a line at now, expired and
        revoked marked), the CA tree (root, intermediates, leaves with the hosts that hold them) and the table.
    type: path
seealso:
  - module: mtls.rollout.certificates
"""

EXAMPLES = r"""
- name: Expiry report
  mtls.rollout.report:
    pki_dir: /srv/pki
    warn_days: 30
    html_path: /var/www/pki/expiry.html
  register: expiry

- name: Print it
  ansible.builtin.debug:
    msg: "{{ expiry.table }}"
"""

RETURN = r"""
certificates:
  description: One row per certificate, soonest expiry first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name in the store.
      type: str
    kind:
      description: V(ca) or V(leaf).
      type: str
    hosts:
      description: Hosts holding it.
      type: list
      elements: str
    serial:
      description: Serial as C(openssl x509 -serial) and nginx's C($ssl_client_serial) print it (upper-case hex,
        even length).
      type: str
    subject:
      description: Subject DN (RFC 4514).
      type: str
    issuer:
      description: Issuer DN (RFC 4514).
      type: str
    issuer_name:
      description: Store name of the issuing CA (null for a root, or when the issuer is not in the store).
      type: str
    not_before:
      description: Start of validity, ISO 8601 UTC.
      type: str
    not_after:
      description: Expiry, ISO 8601 UTC.
      type: str
    renew_from:
      description: Start of the renewal window (the last third of the lifetime), ISO 8601 UTC.
      type: str
    days_left:
      description: Days until expiry.
      type: float
    status:
      description: V(expired), V(revoked), V(expiring), V(due) or V(ok).
      type: str
table:
  description: The report as text lines.
  returned: always
  type: list
  elements: str
counts:
  description: How many certificates have each status.
  returned: always
  type: dict
min_days_left:
  description: The fewest days left of any certificate (null for an empty store).
  returned: always
  type: float
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep
from ansible_collections.mtls.rollout.plugins.module_utils import module_args
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends import choice

try:  # the PKI engine needs the cryptography library on the control node
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import pem, report
except ImportError:
    ENGINE_IMPORT_ERROR = traceback.format_exc()
else:  # the module_utils import without cryptography and record what failed
    ENGINE_IMPORT_ERROR = cryptography_dep.import_error()


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


SPEC = {
    "argument_spec": {
        "pki_dir": module_args.PKI_DIR,
        "backend": module_args.BACKEND,
        "openbao": module_args.OPENBAO,
        "hosts": {"type": "dict", "default": {}},
        "warn_days": {"type": "float", "default": 30},
        "cas": {"type": "list", "elements": "str", "default": []},
        "json_path": {"type": "path"},
        "html_path": {"type": "path"},
    },
    "supports_check_mode": True,
}


def run(module):
    if ENGINE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=ENGINE_IMPORT_ERROR)
    p = module.params
    try:
        backend = choice.backend(Store(p["pki_dir"]), p["backend"], p["openbao"])
        for warning in backend.warnings:
            module.warn(warning)
        rows = report.rows_of(backend.list_issued(p["cas"]), p["hosts"], p["warn_days"])
    except PkiError as e:
        module.fail_json(**module_args.fail_json_kwargs(e))
    generated = pem.iso(pem.utcnow())
    if p["json_path"]:
        _write(p["json_path"], report.to_json(rows, generated))
    if p["html_path"]:
        _write(p["html_path"], report.to_html(rows, generated, p["warn_days"]))
    module.exit_json(changed=False, certificates=rows, table=report.table(rows),
                     counts={s: sum(r["status"] == s for r in rows) for s in report.STATUS_ORDER},
                     min_days_left=min((r["days_left"] for r in rows), default=None))


def main():
    run(AnsibleModule(**SPEC))


if __name__ == "__main__":
    main()
