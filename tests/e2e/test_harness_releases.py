"""Test hosts on cached Debian roots (tests/harness `release=`, rootfs.py): isolation from the cache and the
machine, and the cache's lock and stamp (a half-built root is never used, one build for concurrent callers)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.harness import Fleet, HarnessError, rootfs


def test_a_release_host_writes_only_to_its_own_overlay(make_fleet):
    fleet = make_fleet("rel", 2, release="bullseye")
    root = rootfs.root_dir("bullseye")
    stamp = (root / rootfs.STAMP).read_bytes()
    assert fleet.run(1, ["sh", "-c", "echo x > /etc/rel-marker && rm /usr/bin/curl && touch /marker"]).returncode == 0
    assert fleet.run(1, ["test", "-e", "/usr/bin/curl"]).returncode != 0
    assert fleet.run(2, ["test", "-e", "/etc/rel-marker"]).returncode != 0  # other hosts do not see it
    assert fleet.run(2, ["test", "-x", "/usr/bin/curl"]).returncode == 0
    assert not (root / "etc/rel-marker").exists() and not (root / "marker").exists()
    assert (root / "usr/bin/curl").exists() and (root / rootfs.STAMP).read_bytes() == stamp
    # the host sees the release's userland, not the machine's: its Python, no checkout
    assert fleet.run(1, ["python3", "-c", "import sys; print(sys.version_info[:2])"]).stdout.strip() == "(3, 9)"
    assert fleet.run(1, ["test", "-e", str(Path(__file__))]).returncode != 0
    layers = fleet.host(1).layers
    fleet.destroy()
    assert not os.path.exists(layers) and (root / "usr/bin/curl").exists()
    with open("/proc/self/mountinfo") as mounts:
        assert layers not in mounts.read()


def test_releases_are_checked_before_anything_is_made(tmp_path):
    with pytest.raises(HarnessError, match="release 'buster' is not known: use one of bullseye, bookworm, trixie"):
        Fleet("bad", 2, tmp_path / "a", release="buster")
    with pytest.raises(HarnessError, match="3 names for 2 hosts"):
        Fleet("bad", 2, tmp_path / "b", release=["bullseye", "trixie", "bookworm"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    fleet = Fleet("mixed", 3, tmp_path / "c", release=["trixie", None, ""])
    assert fleet.releases == ["trixie", "", ""]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """rootfs with its cache in tmp_path and debootstrap replaced by a stub that records its calls
    (the real build runs in test_debian_releases and the test above)."""
    monkeypatch.setattr(rootfs, "CACHE_DIR", tmp_path)
    calls = []

    def build(release, target, log):
        calls.append(release)
        (target / "etc").mkdir(parents=True)
        time.sleep(0.3)  # long enough for a concurrent caller to arrive
        if os.environ.get("STUB_BUILD_FAILS"):
            raise HarnessError("debootstrap failed")
        (target / "etc/debian_version").write_text(release)
    monkeypatch.setattr(rootfs, "build", build)
    return calls


def test_a_root_without_its_stamp_or_from_another_recipe_is_rebuilt(cache, tmp_path):
    half = tmp_path / "trixie"
    (half / "etc").mkdir(parents=True)  # a build that died before its stamp
    (half / "etc/half").write_text("")
    assert not rootfs.is_ready("trixie")
    assert rootfs.ensure("trixie") == half and cache == ["trixie"]
    assert not (half / "etc/half").exists() and (half / "etc/debian_version").read_text() == "trixie"
    assert rootfs.ensure("trixie") == half and cache == ["trixie"]  # reused
    stamp = json.loads((half / rootfs.STAMP).read_text())
    (half / rootfs.STAMP).write_text(json.dumps({**stamp, "recipe": {"packages": ["other"]}}))
    rootfs.ensure("trixie")
    assert cache == ["trixie", "trixie"]


def test_a_failed_build_leaves_nothing_usable(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_BUILD_FAILS", "1")
    with pytest.raises(HarnessError, match="debootstrap failed"):
        rootfs.ensure("bullseye")
    assert not rootfs.is_ready("bullseye") and not (tmp_path / "bullseye").exists()
    monkeypatch.delenv("STUB_BUILD_FAILS")
    rootfs.ensure("bullseye")
    assert rootfs.is_ready("bullseye") and not (tmp_path / "bullseye.building").exists()


def test_concurrent_callers_build_each_release_once(cache):
    threads = [threading.Thread(target=rootfs.ensure_all, args=(["bookworm", "trixie"],)) for _i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(cache) == ["bookworm", "trixie"]
    assert rootfs.is_ready("bookworm") and rootfs.is_ready("trixie")
