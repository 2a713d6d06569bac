# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Benchmark helper, not part of the collection (found by ansible-playbook next to bench/playbooks/).

from __future__ import annotations

DOCUMENTATION = r"""
module: mtls_args_only
short_description: Bench only - the Ansible floor of one certificates task, without its work
description:
  - Takes the arguments of M(mtls.rollout.certificates) (the same argument_spec, so the same validation of every
    item and the same no_log scrub) and returns, for every item, a result of the shape and size of an issued host-key
    leaf's, with the same summary and invocation; it signs, reads and writes nothing.
  - What is left of the task's time is what Ansible costs around any module given this argument list.
author: mtls.rollout maintainers (!UNKNOWN)
options: {}
"""

RETURN = r"""
certificates:
  description: One made-up result per item, shaped as the certificates module's for an issued host-key leaf.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtls.rollout.plugins.module_utils import module_args


def result(pki_dir, issuer, item, defaults, i):
    """What certificates returns for an issued host-key leaf (values of the real ones' lengths)."""
    def opt(key):
        return item.get(key) if item.get(key) is not None else defaults.get(key)
    name = item["name"]
    base = f"{pki_dir}/certs/{name}/"
    return {"name": name, "changed": True, "action": "issued", "reasons": ["missing"], "reason": "missing",
            "profile": opt("profile") or "server", "dns": list(opt("dns") or []), "ip": list(opt("ip") or []),
            "email": list(opt("email") or []),
            "paths": {k: base + f for k, f in (("cert", "cert.pem"), ("chain", "chain.pem"),
                                               ("fullchain", "fullchain.pem"), ("ca", "ca.pem"))},
            "key_location": opt("key_location") or "controller", "key_rotated": False,
            "serial": format((0x1F2E3D4C << 128) + i, "040x"),
            "subject": f"CN={item.get('common_name') or name}", "issuer": f"CN={issuer}",
            "not_before": "2026-11-30T20:00:00Z", "not_after": "2027-11-30T20:00:00Z", "days_remaining": 365.0,
            "fingerprint_sha256": (i.to_bytes(32, "big")).hex(":").upper()}


def main():
    module = AnsibleModule(argument_spec=module_args.CERTIFICATES, supports_check_mode=True)
    p = module.params
    defaults = p["defaults"] or {}
    results = [result(p["pki_dir"], p["issuer"], item, defaults, i) for i, item in enumerate(p["certificates"])]
    summary = dict.fromkeys(("issued", "renewed", "updated", "unchanged", "refused"), 0)
    summary["issued"] = len(results)
    module.exit_json(changed=bool(results), summary=summary, certificates=results,
                     invocation=module_args.invocation(p, "certificates"))


if __name__ == "__main__":
    main()
