"""Overlay layers on the control node: which trees a host overlays, where its upper/work dirs live,
creating them with the real directories' owners and modes, and removing them safely."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .system import HarnessError, run

# /usr is overlaid as a whole (this covers /usr/local), so package files written on a host stay there.
OVERLAID_DIRS = ("/etc", "/var", "/root", "/home", "/usr", "/opt", "/srv")
FALLBACK_ROOT = Path("/tmp/mtls-harness-layers")


def layers_root(name: str, state_dir: Path) -> Path:
    """Where a fleet's layers go: STATE_DIR/hosts, unless that lies inside a tree the hosts overlay
    (e.g. molecule's ~/.cache under /root): an upper dir inside its own lower dir would loop."""
    if any(state_dir == Path(d) or Path(d) in state_dir.parents for d in OVERLAID_DIRS):
        digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:10]
        return FALLBACK_ROOT / f"{name}-{digest}"
    return state_dir / "hosts"


def mkdir_like(root: Path, real: str, mode: int = 0o755) -> Path:
    """Create root/real and its parents, copying owner and mode from the real path where it exists
    (an overlay shows the upper dir's owner and mode, e.g. /root must stay 0700)."""
    root.mkdir(parents=True, exist_ok=True)
    parts = Path(real.lstrip("/")).parts
    for depth in range(1, len(parts) + 1):
        rel = Path(*parts[:depth])
        path = root / rel
        path.mkdir(exist_ok=True)
        try:
            st = os.stat(Path("/") / rel)
            os.chown(path, st.st_uid, st.st_gid)
            os.chmod(path, st.st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(path, mode)
    return root / real.lstrip("/")


def make_layers(upper: Path, work: Path) -> None:
    """Empty upper and work dirs for every overlaid tree."""
    for real in OVERLAID_DIRS:
        mkdir_like(upper, real)
        (work / real.lstrip("/")).mkdir(parents=True, exist_ok=True)


def unmount_under(roots: Sequence[Path]) -> None:
    """Lazily unmount anything in this mount namespace under the given dirs (defensive: hosts mount
    their overlays in their own namespaces, which vanish with their last process)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4].replace("\\040", " ") for line in mountinfo]
    for point in sorted(points, key=len, reverse=True):
        if any(Path(point) == r or r in Path(point).parents for r in roots):
            run(["umount", "-l", point], check=False)


def remove_tree(path: Path, within: Path) -> None:
    """rmtree path, but only if it really lies inside `within` (never follow a symlink out)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or within.resolve() not in path.resolve().parents:
        raise HarnessError(f"refusing to delete {path}: not inside {within}")
    shutil.rmtree(path)


def remove_if_empty(*dirs: Path) -> None:
    for directory in dirs:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
