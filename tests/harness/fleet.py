"""A fleet of test hosts: create it, describe it in its state dir, destroy it (also from another process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from . import host as hostlib
from . import layers, network, rootfs
from .host import Host
from .inventory import GroupSpec, render_inventory, render_known_hosts, render_ssh_config, resolve_groups
from .system import CLEAN_ENV, HarnessError, ensure_sshd, global_lock, missing_tools, require_root, ssh_keygen

FLEET_FILE = "fleet.json"
STATE_FORMAT = 1
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# Files create writes directly under the state dir (destroy removes exactly these, then the dir if empty).
STATE_FILES = ("inventory.yml", "ssh_config", "known_hosts", "id_ed25519", "id_ed25519.pub")


class Fleet:
    """N test hosts NAME-1..NAME-N on subnet 10.233.K.0/24, recorded in STATE_DIR/fleet.json.

    ``Fleet(name, hosts, state_dir, subnet_index=0, groups=None).create()`` brings it up;
    ``destroy()`` (or ``Fleet.load(state_dir).destroy()`` from another process) removes it.
    Used as a context manager it is created on enter and destroyed on exit.
    ``subnet_index="auto"`` picks a free subnet (from 100 upwards). ``release`` (a Debian release
    name for every host, or a list with one per host, None/"" for the machine's own root) runs hosts
    on a cached root of that release (see rootfs.py).
    """

    def __init__(
        self,
        name: str,
        hosts: int,
        state_dir: str | os.PathLike,
        *,
        subnet_index: int | str = 0,
        groups: GroupSpec = None,
        release: str | Sequence[str] | None = None,
    ) -> None:
        if not NAME_PATTERN.match(name):
            raise HarnessError(f"fleet name {name!r}: use 1-40 of a-z, 0-9, '-', starting with a letter")
        if not 1 <= int(hosts) <= network.MAX_HOSTS:
            raise HarnessError(f"hosts must be 1..{network.MAX_HOSTS}, not {hosts}")
        if subnet_index != "auto" and not 0 <= int(subnet_index) <= 255:
            raise HarnessError(f"subnet index must be 0..255 or 'auto', not {subnet_index}")
        self.name = name
        self.count = int(hosts)
        self.state_dir = Path(state_dir).resolve()
        if len(self.state_dir.parts) < 3:
            raise HarnessError(f"state dir {self.state_dir} is too close to /: use a dedicated directory")
        self.subnet_index: int | str = subnet_index if subnet_index == "auto" else int(subnet_index)
        self.releases = _releases(release, self.count)
        self.groups: dict[str, list[str]] = {}
        self.hosts: list[Host] = []
        self.layers_root = layers.layers_root(name, self.state_dir)
        self.status = "new"
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        try:
            self.groups = resolve_groups(groups, self.host_names)
        except ValueError as exc:
            raise HarnessError(str(exc)) from None

    # --- description -------------------------------------------------------------------------
    @property
    def host_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(1, self.count + 1)]

    @property
    def fleet_file(self) -> Path:
        return self.state_dir / FLEET_FILE

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.yml"

    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def bridge(self) -> str:
        return network.bridge_name(int(self.subnet_index))

    @property
    def control_ip(self) -> str:
        return network.control_ip(int(self.subnet_index))

    def host(self, which: str | int) -> Host:
        """A host by name ('NAME-2') or 1-based index (2)."""
        for host in self.hosts:
            if which in (host.name, host.index):
                return host
        raise KeyError(f"no host {which!r} in fleet {self.name}")

    def to_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "status": self.status,
            "state_dir": str(self.state_dir),
            "subnet_index": self.subnet_index,
            "bridge": self.bridge,
            "control_ip": self.control_ip,
            "prefix_len": network.PREFIX_LEN,
            "layers_root": str(self.layers_root),
            "inventory": str(self.inventory),
            "private_key": str(self.private_key),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config),
            "groups": self.groups,
            "hosts": [h.to_dict() for h in self.hosts],
            "timings": self.timings,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def molecule_instances(self) -> list[dict]:
        """Molecule's instance_config entries (default driver) for this fleet."""
        return [
            {
                "instance": h.name,
                "address": h.ip,
                "user": "root",
                "port": hostlib.SSHD_PORT,
                "identity_file": str(self.private_key),
            }
            for h in self.hosts
        ]

    @classmethod
    def load(cls, state_dir: str | os.PathLike) -> Fleet:
        """The fleet recorded in STATE_DIR/fleet.json (FileNotFoundError when there is none)."""
        data = json.loads((Path(state_dir).resolve() / FLEET_FILE).read_text(encoding="utf-8"))
        if data.get("format") != STATE_FORMAT:
            raise HarnessError(f"{state_dir}/{FLEET_FILE}: unknown format {data.get('format')}")
        fleet = cls(data["name"], len(data["hosts"]) or 1, data["state_dir"], subnet_index=data["subnet_index"])
        fleet.count = len(data["hosts"])
        fleet.hosts = [Host.from_dict(h) for h in data["hosts"]]
        fleet.releases = [h.release for h in fleet.hosts]
        fleet.groups = data.get("groups", {})
        fleet.layers_root = Path(data["layers_root"])
        fleet.status = data.get("status", "unknown")
        fleet.timings = data.get("timings", {})
        return fleet

    def _save(self) -> None:
        tmp = self.fleet_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.fleet_file)

    # --- create --------------------------------------------------------------------------------
    def create(self) -> Fleet:
        """Bring every host up and wait until each sshd answers; on failure clean up and raise."""
        require_root()
        missing = [tool for tool in missing_tools() if tool != hostlib.SSHD]
        if missing:
            raise HarnessError(f"missing programs: {', '.join(missing)} (Debian: iproute2, util-linux, openssh-client)")
        if any(not r for r in self.releases):
            ensure_sshd()
        if self.fleet_file.exists():
            raise HarnessError(
                f"{self.fleet_file} already describes a fleet; destroy it first "
                f"(python3 -m tests.harness destroy --state-dir {self.state_dir})"
            )
        if re.search(r"[,:\\\s]", str(self.layers_root)):
            raise HarnessError(f"state dir path {self.layers_root} must not contain ',', ':', '\\' or spaces")
        started = time.monotonic()
        rootfs.ensure_all(r for r in self.releases if r)  # outside the global lock: a cold build takes minutes
        self.timings["rootfs"] = round(time.monotonic() - started, 3)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with global_lock():
            try:
                if self.subnet_index == "auto":
                    self.subnet_index = network.pick_free_subnet()
                network.check_subnet_free(int(self.subnet_index))
            except HarnessError:
                layers.remove_if_empty(self.state_dir)
                raise
            self._plan()
            self.status = "creating"
            self._save()  # from here on, destroy() can clean up whatever exists
            try:
                self._build(started)
            except BaseException:
                try:
                    self._teardown()
                except Exception:  # keep the original error; fleet.json stays for a later destroy
                    pass
                raise
        self.status = "up"
        self.timings["create"] = round(time.monotonic() - started, 3)
        self._save()
        return self

    def _plan(self) -> None:
        k = int(self.subnet_index)
        self.hosts = [
            Host(
                name=name,
                index=i,
                ip=network.host_ip(k, i),
                netns=network.netns_name(k, name),
                veth=network.veth_name(k, i),
                layers=str(self.layers_root / name),
                release=release,
            )
            for i, (name, release) in enumerate(zip(self.host_names, self.releases), start=1)
        ]

    def _build(self, started: float) -> None:
        k = int(self.subnet_index)
        for host in self.hosts:
            layers.remove_tree(Path(host.layers), within=self.layers_root)  # a stale one from a crash
            hostlib.make_layers(host)
        for name in STATE_FILES:
            (self.state_dir / name).unlink(missing_ok=True)
        keygens = [ssh_keygen(self.private_key, f"mtls-harness@{self.name}")]
        keygens += [ssh_keygen(h.host_key, h.name) for h in self.hosts]
        network.ensure_bridge(k, str(self.state_dir))
        network.add_hosts(k, [(h.netns, h.veth, h.ip) for h in self.hosts])
        self.timings["network"] = round(time.monotonic() - started, 3)
        for proc in keygens:
            if proc.wait() != 0:
                raise HarnessError(f"ssh-keygen failed: {proc.stderr.read().strip() if proc.stderr else ''}")
        pubkey = self.private_key.with_suffix(".pub").read_text(encoding="utf-8")
        for host in self.hosts:
            hostlib.seed_files(host, self.hosts, self.control_ip, pubkey)
        self._procs = {h.name: hostlib.start(h) for h in self.hosts}
        self.known_hosts.write_text(render_known_hosts(self.hosts), encoding="utf-8")
        self.inventory.write_text(
            render_inventory(self.name, self.hosts, self.groups, self.private_key, self.known_hosts), encoding="utf-8"
        )
        self.ssh_config.write_text(render_ssh_config(self.hosts, self.private_key, self.known_hosts), encoding="utf-8")
        hostlib.wait_until_ready(self.hosts, self._procs)

    # --- destroy -------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Kill every process of every host, delete namespaces, veths, the bridge when unused, and state.
        Idempotent; works after a partial create and from another process (via Fleet.load)."""
        require_root()
        with global_lock():
            self._teardown()
        self.status = "destroyed"

    def _teardown(self) -> None:
        namespaces = [h.netns for h in self.hosts]
        network.kill_netns_processes(namespaces)
        for proc in self._procs.values():  # reap our own children (others are reaped by init)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        network.delete_hosts(namespaces, [h.veth for h in self.hosts])
        if self.subnet_index != "auto":
            network.delete_bridge_if_unused(int(self.subnet_index))
        layers.unmount_under([self.state_dir, self.layers_root])
        for host in self.hosts:
            layers.remove_tree(Path(host.layers), within=self.layers_root)
        layers.remove_if_empty(self.layers_root, layers.FALLBACK_ROOT)
        for name in STATE_FILES:
            (self.state_dir / name).unlink(missing_ok=True)
        self.fleet_file.with_suffix(".tmp").unlink(missing_ok=True)
        self.fleet_file.unlink(missing_ok=True)
        layers.remove_if_empty(self.state_dir)

    # --- use -----------------------------------------------------------------------------------
    def run(
        self, which: str | int, argv: Sequence[str], *, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside a host's namespaces directly (nsenter, no SSH): for checks and debugging."""
        host = self.host(which)
        pid = hostlib.init_pid(host)
        if pid is None:
            raise HarnessError(f"test host {host.name} is not running")
        return subprocess.run(
            hostlib.enter_argv(pid, argv), capture_output=True, text=True, env=CLEAN_ENV, timeout=timeout, check=check
        )

    def ssh_argv(self, which: str | int, command: str) -> list[str]:
        """An ssh command line that runs command on a host as root, the way Ansible connects."""
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.host(which).name, command]

    def __enter__(self) -> Fleet:
        return self.create()

    def __exit__(self, *exc_info) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"Fleet({self.name!r}, hosts={self.count}, subnet={self.subnet_index}, status={self.status})"


def _releases(release: str | Sequence[str] | None, count: int) -> list[str]:
    """One release per host ("" = the machine's own root): None, one name for all, or one per host."""
    if release is None or isinstance(release, str):
        names = [release or ""] * count
    else:
        names = [r or "" for r in release]
        if len(names) != count:
            raise HarnessError(f"release: {len(names)} names for {count} hosts (give one, or one per host)")
    for name in names:
        if name:
            rootfs.check_release(name)
    return names


def create(
    name: str,
    hosts: int,
    state_dir: str | os.PathLike,
    *,
    subnet_index: int | str = 0,
    groups: GroupSpec = None,
    release: str | Sequence[str] | None = None,
) -> Fleet:
    """Create a fleet and return it (see Fleet)."""
    return Fleet(name, hosts, state_dir, subnet_index=subnet_index, groups=groups, release=release).create()


def destroy(state_dir: str | os.PathLike) -> bool:
    """Destroy the fleet recorded in STATE_DIR; False when there is nothing to destroy."""
    require_root()
    try:
        fleet = Fleet.load(state_dir)
    except FileNotFoundError:
        return False
    fleet.destroy()
    return True


def sweep(subnet_index: int) -> list[str]:
    """Remove leftovers on one subnet when the state dir is lost (namespaces, veths, bridge)."""
    require_root()
    with global_lock():
        return network.sweep(subnet_index)
