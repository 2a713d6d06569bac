# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn inventory into certificate lists and PKI facts the templates need."""

from __future__ import annotations

from ansible_collections.mtls.rollout.plugins.module_utils import fleet


class FilterModule:
    def filters(self):
        return {
            "server_certificates": fleet.server_certificates,
            "client_certificates": fleet.client_certificates,
            "verify_depth": fleet.verify_depth,
            "pem_bundle": fleet.pem_bundle,
            "certificate_hosts": fleet.certificate_hosts,
        }
