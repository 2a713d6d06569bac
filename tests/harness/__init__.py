"""Test-host harness: a fleet of Linux network+mount namespaces, each with its own sshd, reached by
Ansible over SSH like production hosts. See README.md in this directory.

API: ``Fleet(name, hosts, state_dir, subnet_index=0, groups=None)`` with ``create()``, ``destroy()``,
``Fleet.load(state_dir)`` and use as a context manager; module functions ``create``, ``destroy``, ``sweep``.
CLI: ``python3 -m tests.harness create|destroy|sweep|status``. Stdlib only; must run as root.
"""

from .fleet import Fleet, create, destroy, sweep
from .host import Host
from .system import HarnessError, missing_tools

__all__ = ["Fleet", "Host", "HarnessError", "create", "destroy", "missing_tools", "sweep"]
