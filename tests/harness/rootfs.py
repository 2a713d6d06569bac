"""Debian root filesystems for test hosts of other releases (bullseye, bookworm, trixie).

``ensure(release)`` returns the root of a minimal Debian RELEASE built by debootstrap from the mirror
the machine's own apt sources use, cached under CACHE_DIR/RELEASE and reused across runs and tests.
A lock file serialises builders of one release; the stamp file (written last, holding the recipe)
says the root is complete: a root without it, or built from another recipe, is rebuilt.
Hosts never change the cached root: they overlay it (see host.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .system import HarnessError

RELEASES = {"bullseye": "11", "bookworm": "12", "trixie": "13"}
CACHE_DIR = Path(os.environ.get("MTLS_HARNESS_ROOTFS", "/var/cache/mtls-harness/rootfs"))
# What a test host needs: its sshd, Python for Ansible's modules (python3-apt for the apt module),
# the web server and TLS tools the roles use, NSS's certutil for clients. (Not cron: on trixie it needs
# systemd-sysusers, which debootstrap's --include cannot resolve; no role runs cron on a host in a test.)
PACKAGES = (
    "openssh-server",
    "python3",
    "python3-apt",
    "nginx",
    "openssl",
    "ca-certificates",
    "curl",
    "iproute2",
    "procps",
    "libnss3-tools",
)
RECIPE = {"variant": "minbase", "packages": sorted(PACKAGES), "format": 1}
STAMP = ".mtls-harness-rootfs.json"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


def check_release(release: str) -> str:
    if release not in RELEASES:
        raise HarnessError(f"release {release!r} is not known: use one of {', '.join(RELEASES)}")
    return release


def root_dir(release: str) -> Path:
    return CACHE_DIR / check_release(release)


def is_ready(release: str) -> bool:
    """True when the cached root of release is complete and built from today's recipe."""
    try:
        stamp = json.loads((root_dir(release) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("recipe") == RECIPE


def debian_mirror() -> str:
    """The Debian mirror of the machine's apt sources (MTLS_HARNESS_MIRROR overrides it)."""
    if os.environ.get("MTLS_HARNESS_MIRROR"):
        return os.environ["MTLS_HARNESS_MIRROR"]
    files: list[Path] = []
    for source in APT_SOURCES:
        files += sorted(source.glob("*")) if source.is_dir() else [source] if source.is_file() else []
    # deb822 "URIs: X" or one-line "deb [opts] X suite": the first URI ending in /debian
    pattern = re.compile(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)/?(?:\s|$)", re.M)
    for path in files:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            match = pattern.search(path.read_text(encoding="utf-8"))
            if match:
                return match.group(1)
    raise HarnessError(
        "no Debian mirror in the machine's apt sources (/etc/apt/sources.list*): set MTLS_HARNESS_MIRROR"
    )


@contextlib.contextmanager
def _lock(release: str) -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{release}.lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], log: Path, what: str) -> None:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise HarnessError(f"{what} failed ({done.returncode}); log {log}:\n{tail}")


def build(release: str, target: Path, log: Path) -> None:
    """debootstrap release into target: download on the machine's network, then install the packages
    in a throwaway network and PID namespace, so no postinst can start a daemon on the machine."""
    if shutil.which("debootstrap") is None:
        raise HarnessError("debootstrap is not installed: apt-get install debootstrap")
    first = ["debootstrap", "--foreign", "--variant=minbase", "--components=main", "--include=" + ",".join(PACKAGES)]
    _run([*first, release, str(target), debian_mirror()], log, f"debootstrap (download) of {release}")
    # the second stage runs postinst scripts: none may start a service
    policy = target / "usr/sbin/policy-rc.d"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
    policy.chmod(0o755)
    second = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private"]
    _run(
        [*second, "chroot", str(target), "/debootstrap/debootstrap", "--second-stage"],
        log,
        f"debootstrap (install) of {release}",
    )
    shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)
    (target / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def ensure_all(releases: Iterable[str]) -> None:
    """ensure() each release, building missing ones side by side (downloads dominate a cold build)."""
    missing = sorted({check_release(r) for r in releases if not is_ready(r)})
    if len(missing) <= 1:
        for release in missing:
            ensure(release)
        return
    with ThreadPoolExecutor(len(missing)) as pool:
        for future in [pool.submit(ensure, r) for r in missing]:
            future.result()


def ensure(release: str) -> Path:
    """The cached root of release, built first when missing, half-built or from an older recipe."""
    final = root_dir(release)
    if is_ready(release):
        return final
    with _lock(release):
        if is_ready(release):  # another process built it while we waited
            return final
        building = CACHE_DIR / f"{release}.building"
        log = CACHE_DIR / f"{release}.log"
        for stale in (building, final):
            if stale.exists():
                shutil.rmtree(stale)
        log.unlink(missing_ok=True)
        print(f"tests.harness: building the Debian {release} root in {final} (once; log {log})", file=sys.stderr)
        started = time.monotonic()
        build(release, building, log)
        building.rename(final)
        stamp = {"recipe": RECIPE, "release": release, "seconds": round(time.monotonic() - started, 1)}
        (final / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return final
