# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mtls.rollout.verify: inside the controller's worker process when the task runs on the control node (plugin_utils.in_process)."""

from __future__ import annotations

from ansible_collections.mtls.rollout.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    module = "verify"
