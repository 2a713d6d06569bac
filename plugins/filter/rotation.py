# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/rotate.yml: the rotation plan from the inventory, the phase from what hosts serve and trust."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


# module_utils.rotate (and with it cryptography) is imported on first use, not when the file loads: Ansible loads
# every filter file of the collection to find any one of its filters (mtls.rollout.pem_bundle included), in each
# worker process, and the import would cost each server's task ~60 ms.
def rotation_plan(cas, ca, to, server_issuer, client_issuer, new_server_issuer="", new_client_issuer="",
                  nginx_client_issuers=None, pki_dir=""):
    from ansible_collections.mtls.rollout.plugins.module_utils import rotate

    try:
        return rotate.plan(cas, ca, to, server_issuer, client_issuer, new_server_issuer, new_client_issuer,
                           nginx_client_issuers, pki_dir)
    except rotate.RotateError as e:
        raise AnsibleFilterError(str(e)) from None


def rotation_phase(plan, probes, clients, round_name="", ran="", servers=None):
    from ansible_collections.mtls.rollout.plugins.module_utils import rotate

    result = rotate.derive(plan, probes, clients, round_name, servers)
    result["regressed"] = rotate.regressed(result, ran)
    return result


class FilterModule:
    def filters(self):
        return {"rotation_plan": rotation_plan, "rotation_phase": rotation_phase}
