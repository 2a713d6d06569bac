"""The fleet network: one bridge per subnet 10.233.K.0/24, a veth pair and a network namespace per host.

Names are derived from the subnet index K so leftovers can be found without state:
bridge ``mtlsbrK`` (control node 10.233.K.1), host veth ``mtlsKhI`` (peer ``eth0`` inside),
namespace ``mtlsK-<host name>``, host I at 10.233.K.(I+1). Nothing else is touched: no default
route, no IP forwarding, no addresses outside the subnet, no IPv6 link-local addresses.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from .system import HarnessError, run

PREFIX_LEN = 24
NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
MAX_HOSTS = 253
AUTO_SUBNETS = [*range(100, 255), *range(1, 100)]  # "auto" keeps low indexes free for explicit use


def bridge_name(k: int) -> str:
    return f"mtlsbr{k}"


def control_ip(k: int) -> str:
    return f"10.233.{k}.1"


def host_ip(k: int, index: int) -> str:
    return f"10.233.{k}.{index + 1}"


def veth_name(k: int, index: int) -> str:
    return f"mtls{k}h{index}"


def netns_name(k: int, host_name: str) -> str:
    return f"mtls{k}-{host_name}"


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def bridge_ports(k: int) -> list[str]:
    """Interfaces enslaved to the subnet's bridge (empty when the bridge is gone)."""
    brif = SYS_NET / bridge_name(k) / "brif"
    return sorted(os.listdir(brif)) if brif.is_dir() else []


def bridge_owner(k: int) -> str:
    """The state dir recorded in the bridge's alias by the fleet that uses it ('' if none)."""
    try:
        return (SYS_NET / bridge_name(k) / "ifalias").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _foreign_addresses(k: int) -> list[str]:
    """Addresses in 10.233.K.0/24 held by interfaces other than our bridge (a conflict)."""
    links = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    prefix = f"10.233.{k}."
    return [
        f"{info['local']} on {link['ifname']}"
        for link in links
        if link.get("ifname") != bridge_name(k)
        for info in link.get("addr_info", [])
        if str(info.get("local", "")).startswith(prefix)
    ]


def subnet_problem(k: int) -> str:
    """Why subnet K cannot take a new fleet now, or '' when it is free."""
    if bridge_ports(k):
        owner = bridge_owner(k) or "unknown state dir"
        return f"subnet 10.233.{k}.0/24 is in use by another fleet ({owner})"
    foreign = _foreign_addresses(k)
    if foreign:
        return f"subnet 10.233.{k}.0/24 is already used on this machine: {', '.join(foreign)}"
    stale = _netns_with_prefix(f"mtls{k}-") + _links_with_prefix(f"mtls{k}h")
    if stale:
        return f"leftovers on subnet {k}: {', '.join(stale)}"
    return ""


def pick_free_subnet() -> int:
    """The first free subnet index, searched from 100 upwards (call under the global lock)."""
    for k in AUTO_SUBNETS:
        if not link_exists(bridge_name(k)) and not subnet_problem(k):
            return k
    raise HarnessError("no free subnet index 1..254 for a new fleet")


def check_subnet_free(k: int) -> None:
    problem = subnet_problem(k)
    if problem:
        owner = bridge_owner(k) if bridge_ports(k) else ""
        destroy = f"python3 -m tests.harness destroy --state-dir {owner if owner.startswith('/') else 'DIR'}"
        raise HarnessError(
            f"{problem}; destroy that fleet ({destroy}), clean up leftovers with "
            f"`python3 -m tests.harness sweep --subnet-index {k}`, or use another --subnet-index"
        )


def ensure_bridge(k: int, owner: str) -> None:
    """Create (or adopt an empty) bridge mtlsbrK with 10.233.K.1/24 and a fixed MAC; record the owner."""
    br = bridge_name(k)
    if not link_exists(br):
        # A fixed, locally administered MAC: the bridge would otherwise change MAC as ports come and go.
        run(["ip", "link", "add", "name", br, "address", f"02:6d:74:6c:73:{k:02x}", "type", "bridge"])
        run(["ip", "link", "set", "dev", br, "addrgenmode", "none"])
    addrs = run(["ip", "-j", "-4", "addr", "show", "dev", br]).stdout
    if control_ip(k) not in addrs:
        run(["ip", "addr", "add", f"{control_ip(k)}/{PREFIX_LEN}", "dev", br])
    run(["ip", "link", "set", "dev", br, "alias", owner[:250] or "mtls-harness", "up"])


def add_hosts(k: int, hosts: Iterable[tuple[str, str, str]]) -> None:
    """For each (netns, veth, ip): namespace, veth pair into the bridge, eth0 address, lo and eth0 up."""
    hosts = list(hosts)
    br = bridge_name(k)
    lines = []
    for ns, veth, _ip in hosts:
        lines += [
            f"netns add {ns}",
            f"link add {veth} master {br} type veth peer name eth0 netns {ns}",
            f"link set dev {veth} addrgenmode none",
            f"link set dev {veth} up",
        ]
    run(["ip", "-batch", "-"], stdin="\n".join(lines) + "\n")
    # Inside each namespace: address first, then up, so the first ARP from the control node is answered.
    for ns, _veth, ip in hosts:
        inside = [
            "link set dev lo up",
            "link set dev eth0 addrgenmode none",
            f"addr add {ip}/{PREFIX_LEN} dev eth0",
            "link set dev eth0 up",
        ]
        run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(inside) + "\n")


def netns_pids(names: Iterable[str]) -> dict[str, list[int]]:
    """PIDs of all processes in each named network namespace (like `ip netns pids`, in one /proc scan)."""
    wanted = {}
    for name in names:
        try:
            st = os.stat(NETNS_DIR / name)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a zombie
        name = wanted.get((st.st_dev, st.st_ino))
        if name is not None:
            found[name].append(int(entry))
    return found


def is_namespace_init(pid: int) -> bool:
    """True when pid is PID 1 of a nested PID namespace (a test host's sshd)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


def kill_netns_processes(names: Iterable[str], timeout: float = 10.0) -> None:
    """SIGKILL every process in the namespaces until none is left.

    Each host's PID 1 goes first: the kernel then kills its whole PID namespace and the waiting
    `unshare` parent reaps it and exits, so no zombies are left for a non-reaping init.
    """
    names = list(names)
    pids = [pid for group in netns_pids(names).values() for pid in group]
    _kill([pid for pid in pids if is_namespace_init(pid)])
    grace = time.monotonic() + 0.5
    while any(netns_pids(names).values()) and time.monotonic() < grace:
        time.sleep(0.005)
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for group in netns_pids(names).values() for pid in group]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"processes survive SIGKILL in {', '.join(names)}: {pids}")
        _kill(pids)
        time.sleep(0.01)


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def delete_hosts(netns: Iterable[str], veths: Iterable[str]) -> None:
    """Delete veth pairs and namespaces that exist (call after their processes are gone)."""
    lines = [f"link del dev {veth}" for veth in veths if link_exists(veth)]
    lines += [f"netns del {ns}" for ns in netns if netns_exists(ns)]
    if lines:
        run(["ip", "-force", "-batch", "-"], stdin="\n".join(lines) + "\n", check=False)
    left = [veth for veth in veths if link_exists(veth)] + [ns for ns in netns if netns_exists(ns)]
    if left:
        raise HarnessError(f"could not delete {', '.join(left)}")


def delete_bridge_if_unused(k: int) -> bool:
    """Delete bridge mtlsbrK when no port is left on it; True when it is gone."""
    br = bridge_name(k)
    if not link_exists(br):
        return True
    if bridge_ports(k):
        return False
    run(["ip", "link", "del", "dev", br])
    return True


def _netns_with_prefix(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)) if NETNS_DIR.is_dir() else []


def _links_with_prefix(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(SYS_NET) if n.startswith(prefix))


def sweep(k: int) -> list[str]:
    """Remove everything the harness could have left on subnet K, without a state dir; returns what went."""
    namespaces = _netns_with_prefix(f"mtls{k}-")
    veths = _links_with_prefix(f"mtls{k}h")
    kill_netns_processes(namespaces)
    delete_hosts(namespaces, veths)
    removed = namespaces + veths
    if link_exists(bridge_name(k)):
        if delete_bridge_if_unused(k):
            removed.append(bridge_name(k))
        else:
            raise HarnessError(f"bridge {bridge_name(k)} still has ports: {', '.join(bridge_ports(k))}")
    return removed
