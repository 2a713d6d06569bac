# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attributes every module documents; a module's own attribute entries override these."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates
        no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
    support: full
"""

    # the control-node modules with an action plugin (plugins/action, plugin_utils/in_process.py)
    IN_PROCESS = r"""
attributes:
  action:
    description:
      - Has an action plugin. When the task runs on the control node with the controller's own Python (a local
        connection whose C(ansible_python_interpreter) is C(ansible_playbook_python), without C(become), C(async) or
        C(environment)), the module's code runs inside Ansible's worker process instead of a new Python with its
        AnsiballZ payload; the result is the same. Anywhere else, or with the variable C(mtls_in_process=false), it
        runs as a module.
    support: full
"""
