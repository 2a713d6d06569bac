# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja tests for inventory values."""

from __future__ import annotations

from ansible_collections.mtls.rollout.plugins.module_utils import fleet


class TestModule:
    def tests(self):
        return {"ip_address": fleet.is_ip}
