# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a control-node module of this collection inside Ansible's worker process instead of a new Python.

A module run on the control node costs its AnsiballZ payload (built once per run: 0.1-0.15 s), a new Python with
Ansible's module_utils and cryptography imported, and a JSON round trip: 0.2-0.4 s per task, more than the work of
an idempotent run. When the task would run the module with this very Python anyway (local connection, the task's
``ansible_python_interpreter`` is the controller's, no become, async or environment), the action plugin validates the arguments
with the module's own argument spec and calls the module's ``run`` with a stand-in for AnsibleModule: the same
checks, result, warnings and no_log scrubbing. Anywhere else, or with ``mtls_in_process: false``, the module runs as
usual.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from ansible.module_utils.common.arg_spec import ModuleArgumentSpecValidator
from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action.normal import ActionModule as NormalAction


class _Done(Exception):
    """exit_json or fail_json: the module's result, and the end of its run."""

    def __init__(self, result):
        super().__init__()
        self.result = result


class Module:
    """What this collection's modules use of AnsibleModule: params, check_mode, _diff, warn, exit_json, fail_json."""

    def __init__(self, params, check_mode, diff):
        self.params, self.check_mode, self._diff = params, check_mode, diff
        self.warnings = []

    def warn(self, warning):
        self.warnings.append(warning)

    def exit_json(self, **result):
        raise _Done(result)

    def fail_json(self, msg, **result):
        raise _Done({**result, "failed": True, "msg": msg})


def run_module(name, code, args, check_mode, diff):
    """The result of module ``code`` (its SPEC and run(module)) for ``args``, as AnsibleModule would return it
    (``name``: the task's action, which AnsibleModule's messages name)."""
    spec = {k: v for k, v in code.SPEC.items() if k != "supports_check_mode"}
    # the arguments as the module gets them: JSON's plain types (no tagged strings, no templating leftovers)
    args = json.loads(json.dumps(args, cls=AnsibleJSONEncoder))
    validated = ModuleArgumentSpecValidator(**spec).validate(args)
    if validated.error_messages:
        msg = validated.errors.msg
        if isinstance(validated.errors[0], UnsupportedError):
            msg = f"Unsupported parameters for ({name}) module: {msg}"
        result = {"failed": True, "msg": msg}
    else:
        module = Module(validated.validated_parameters, check_mode, diff)
        try:
            code.run(module)
        except _Done as done:
            result = done.result
        else:
            raise RuntimeError(f"{name}: run() returned without exit_json or fail_json")
        result.setdefault("invocation", {"module_args": module.params})
        if module.warnings:
            result["warnings"] = module.warnings
    return _scrubbed(result, validated._no_log_values)  # pylint: disable=protected-access


def _scrubbed(value, no_log_values, depth=3):
    """remove_values(value, no_log_values), as AnsibleModule does, but only where it can change something: a part
    whose JSON text holds no such value (as itself or JSON-escaped, in any letter case) is kept as it is, down to
    ``depth`` levels of dicts - so 10,000 results are not copied because the invocation's defaults hold a password."""
    text = json.dumps(value, ensure_ascii=False, default=str).lower()
    if not any(v.lower() in text or json.dumps(v, ensure_ascii=False)[1:-1].lower() in text for v in no_log_values):
        return value
    if isinstance(value, dict) and depth:
        return {k: _scrubbed(v, no_log_values, depth - 1) for k, v in value.items()}
    return remove_values(value, no_log_values)


class InProcessAction(NormalAction):
    """The action plugin of a control-node module: ``module`` names it (plugins/modules/<module>.py)."""

    module = ""

    def _in_process(self, task_vars):
        # the module's own process: in the background, as another user, with the task's environment (BAO_TOKEN...)
        if (self._task.async_val or self._play_context.become or self._connection.transport != "local"
                or any(self._task.environment or [])):
            return False
        host_vars = ((task_vars.get("ansible_delegated_vars") or {}).get(self._task.delegate_to) or {}
                     if self._task.delegate_to else task_vars)
        interpreter = self._templar.template(host_vars.get("ansible_python_interpreter", ""))
        return (boolean(self._templar.template(task_vars.get("mtls_in_process", True)), strict=False)
                and bool(interpreter) and os.path.abspath(interpreter) == os.path.abspath(sys.executable))

    def run(self, tmp=None, task_vars=None):
        if not self._in_process(task_vars or {}):
            return super().run(tmp, task_vars)
        code = importlib.import_module(f"ansible_collections.mtls.rollout.plugins.modules.{self.module}")
        return run_module(self._task.action, code, dict(self._task.args), bool(self._task.check_mode),
                          bool(self._task.diff))
