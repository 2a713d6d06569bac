"""Command line: ``python3 -m tests.harness create|destroy|sweep|status`` (run from the repo root, as root)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import host as hostlib
from .fleet import Fleet, create, destroy, sweep
from .system import HarnessError


def _subnet(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m tests.harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("create", help="create a fleet; prints a JSON summary on stdout")
    p.add_argument("--name", required=True, help="fleet name; hosts are NAME-1..NAME-N")
    p.add_argument("--hosts", type=int, required=True, help="number of hosts (1..253)")
    p.add_argument("--state-dir", required=True, help="where keys, inventory.yml and fleet.json go")
    p.add_argument(
        "--subnet-index",
        type=_subnet,
        default=0,
        metavar="K|auto",
        help="use 10.233.K.0/24 and bridge mtlsbrK (default 0; 'auto' picks a free one)",
    )
    p.add_argument(
        "--groups",
        default="",
        metavar="SPEC",
        help="inventory groups, e.g. 'mtls_servers=1-3,mtls_clients=3' (default: only 'all')",
    )
    p.add_argument(
        "--release",
        default="",
        metavar="NAME[,NAME...]",
        help="run the hosts on a cached Debian root (bullseye, bookworm, trixie; built once with debootstrap): "
        "one name for all hosts or one per host, '' for the machine's own root (default)",
    )

    p = sub.add_parser("destroy", help="destroy the fleet recorded in the state dir (idempotent)")
    p.add_argument("--state-dir", required=True)

    p = sub.add_parser("sweep", help="remove leftovers of a subnet whose state dir is lost")
    p.add_argument("--subnet-index", type=int, required=True)

    p = sub.add_parser("status", help="print fleet.json and whether each host is running")
    p.add_argument("--state-dir", required=True)
    return parser


def _summary(fleet: Fleet) -> dict:
    return {
        "name": fleet.name,
        "state_dir": str(fleet.state_dir),
        "inventory": str(fleet.inventory),
        "private_key": str(fleet.private_key),
        "ssh_config": str(fleet.ssh_config),
        "subnet_index": fleet.subnet_index,
        "bridge": fleet.bridge,
        "control_ip": fleet.control_ip,
        "hosts": [{"name": h.name, "ip": h.ip, "release": h.release} for h in fleet.hosts],
        "groups": fleet.groups,
        "instances": fleet.molecule_instances(),
        "seconds": fleet.timings.get("create"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "create":
            release = args.release.split(",") if "," in args.release else args.release
            fleet = create(
                args.name,
                args.hosts,
                args.state_dir,
                subnet_index=args.subnet_index,
                groups=args.groups,
                release=release,
            )
            print(json.dumps(_summary(fleet), indent=2))
        elif args.command == "destroy":
            done = destroy(args.state_dir)
            print(f"destroyed fleet in {args.state_dir}" if done else f"no fleet in {args.state_dir}", file=sys.stderr)
        elif args.command == "sweep":
            removed = sweep(args.subnet_index)
            print("removed: " + (", ".join(removed) or "nothing"), file=sys.stderr)
        elif args.command == "status":
            fleet = Fleet.load(args.state_dir)
            data = fleet.to_dict()
            for entry, host in zip(data["hosts"], fleet.hosts):
                entry["running"] = hostlib.init_pid(host) is not None
            print(json.dumps(data, indent=2))
    except (HarnessError, FileNotFoundError) as exc:
        print(f"tests.harness: error: {exc}", file=sys.stderr)
        return 1
    return 0
