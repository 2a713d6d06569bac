"""What a file set needs on its host: commands installed, and the service it configures running.

Runs on managed hosts (stdlib only, Python 3.6+). Lets ``install_files`` do in its one run what would otherwise
cost a package-manager run and a service-module run (plus the service module's fact gathering) per host, every
time: on an idempotent run, nothing but a PATH look-up and a status command.
"""

import os
import shutil
import subprocess


class ServiceError(Exception):
    pass


def missing(commands):
    """The commands (names on PATH, or absolute paths) that are not installed on this host."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return [c for c in commands if not shutil.which(c, path=path)]


def _commands(name):
    """(status, start) command lines for service ``name``: systemd when it runs, else the service wrapper (SysV, OpenRC)."""
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        return ["systemctl", "is-active", "--quiet", name], ["systemctl", "start", name]
    for wrapper in ("service", "rc-service"):
        found = shutil.which(wrapper, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if found:
            return [found, name, "status"], [found, name, "start"]
    raise ServiceError(f"cannot start {name} here: no systemd, no service or rc-service command")


def _run(argv):
    # stdlib-only host code with no AnsibleModule to call run_command on (ansible-test 2.21's pylint asks for it)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # pylint: disable=ansible-bad-function
                          universal_newlines=True, check=False)


def ensure_running(name, check=False):
    """Start service ``name`` unless it runs (``status`` exits 0); True when it was (or, in check mode, would be) started."""
    status, start = _commands(name)
    if _run(status).returncode == 0:
        return False
    if not check:
        proc = _run(start)
        if proc.returncode != 0:
            raise ServiceError(f"starting {name} failed (exit {proc.returncode}): {proc.stdout.strip()}")
    return True
