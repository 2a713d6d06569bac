"""Small system helpers: the harness error, root/tool checks, running commands, the global lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

SSHD = "/usr/sbin/sshd"
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "mount", "ssh-keygen")
# Environment for everything the harness starts on a host: nothing of the caller's leaks in.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_LOCK_DIR = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
LOCK_FILE = _LOCK_DIR / "mtls-harness.lock"


class HarnessError(RuntimeError):
    """A fleet could not be created or destroyed; the message says why and what to do."""


def require_root() -> None:
    """Refuse to go on unless running as root (namespaces, mounts and links need it)."""
    if os.geteuid() != 0:
        raise HarnessError(
            "the test-host harness must run as root (it creates network namespaces, "
            "mounts and links); run it with sudo or as root"
        )


def missing_tools() -> list[str]:
    """Names of required programs that are not installed (sshd included)."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    return missing


def ensure_sshd() -> None:
    """Install Debian's openssh-server when /usr/sbin/sshd is missing (apt-get update first)."""
    if os.access(SSHD, os.X_OK):
        return
    if shutil.which("apt-get") is None:
        raise HarnessError(f"{SSHD} is missing and apt-get is not available: install openssh-server")
    print("tests.harness: installing openssh-server (apt-get update; apt-get install)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} failed:\n{done.stderr.strip()}")
    if not os.access(SSHD, os.X_OK):
        raise HarnessError(f"openssh-server installed but {SSHD} is still missing")


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with captured output; on failure raise HarnessError quoting its stderr."""
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise HarnessError(f"command failed ({done.returncode}): {' '.join(argv)}\n{detail}")
    return done


def ssh_keygen(path: Path, comment: str) -> subprocess.Popen:
    """Start generating an ed25519 key pair without passphrase at path (+ .pub); caller waits."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def global_lock() -> Iterator[None]:
    """Serialize creates/destroys on this machine (bridges and subnets are shared resources)."""
    with open(LOCK_FILE, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
