"""Fleet rollout benchmark: site.yml on 1, 3, 10, 20 and 50 test hosts (tests/harness) against Ansible's floor.

  python3 bench/fleet.py                          # sizes 1,3,10,20,50; 3 timed re-runs each; medians
  python3 bench/fleet.py --sizes 1,3 --repeat 1   # a quick look
  python3 bench/fleet.py --forks 20               # Ansible's default is 5 forks
  python3 bench/fleet.py --key-location host      # keys made on the servers (mtls_key_location host)

For each size K a fresh fleet (`python3 -m tests.harness create ... --groups mtls_servers=1-K
--subnet-index auto`, every host an nginx server) and a fresh PKI store; the fleet is destroyed
afterwards, also on error or Ctrl-C. Per fleet:
  first     site.yml on the fresh hosts (wall time, tasks and changes per host)
  floor     Ansible's floor on the same fleet, forks and connection settings: `ansible all -m
            ansible.builtin.ping` (ad hoc) and bench/playbooks/fleet_floor.yml (a one-task ping playbook);
            timed in the same repetitions as re-run and renew, which are reported as ratios to the playbook floor
  re-run    site.yml again, nothing to do (--repeat timed runs, median wall time)
  renew     playbooks/renew.yml when it exists (nothing due), else site.yml with mtls_renew_before_days
            set (a renewal check with nothing due); --repeat timed runs
  count     one more re-run and renew run with -vvv, not timed: remote module executions per host
Every playbook (and the floor) runs with the project venv, ANSIBLE_PIPELINING=True (as the e2e tests)
and the bench timer callback; peak RSS is the largest process of each run (ansible-playbook or a worker).
Traffic goes only to the harness hosts (10.233.K.x on a local bridge).

Counting remote module executions (-vvv): with pipelining a module runs on a host as ONE ssh command
that feeds the module to the interpreter on stdin, logged as `<IP> SSH: EXEC ssh ... IP '/bin/sh -c
'"'"'/usr/bin/python3 && sleep 0'"'"''`; without pipelining as `PUT ... AnsiballZ_<module>.py` followed
by an EXEC of it. Each such line for a host's IP counts one remote module execution; other EXEC lines
(e.g. `echo ~ && sleep 0`) are counted separately as `other ssh commands`. Tasks delegated to
localhost (mtls.rollout.verify, the renew playbook's openssl checks) run on the control node and do
not count as remote; module runs on the control node (`<127.0.0.1>`/`<localhost> EXEC ... python3 &&
sleep 0`: the pki role's modules and the delegated checks) are reported as one total. Results: bench/results/fleet.{json,csv,png}.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

TIMEOUT = 1800
HARNESS = [sys.executable, "-m", "tests.harness"]
FLOOR_PLAYBOOK = os.path.join(common.BENCH, "playbooks", "fleet_floor.yml")
EXEC_RE = re.compile(r"^<([0-9a-fA-F.:]+)> SSH: EXEC (.*)$")
PUT_RE = re.compile(r"^<([0-9a-fA-F.:]+)> PUT .* TO .*AnsiballZ_\w+\.py")
TASK_RE = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(.*?)\] \**$")
MODULE_RE = re.compile(r"^Using module file .*/([\w.]+)\.py$")


def _terminate(signum, _frame):
    raise SystemExit(f"bench/fleet.py: signal {signum}, destroying the fleet")


def count_remote(output, ips):
    """({host: {module_execs, other_ssh, per_task, modules}}, module runs on the control node) from -vvv output."""
    by_ip = {ip: name for name, ip in ips.items()}
    found = {name: {"module_execs": 0, "other_ssh": 0, "per_task": Counter(), "modules": Counter()} for name in ips}
    task, module = "?", "?"
    pending_put, control = set(), 0
    for line in output.splitlines():
        m = TASK_RE.match(line)
        if m:
            task = m.group(1)
            continue
        m = MODULE_RE.match(line.strip())
        if m:
            module = m.group(1)
            continue
        m = PUT_RE.match(line)
        if m and m.group(1) in by_ip:
            pending_put.add(m.group(1))
            continue
        if re.match(r"^<(?:127\.0\.0\.1|localhost|::1)> EXEC .*python[0-9.]* && sleep 0", line):
            control += 1
            continue
        m = EXEC_RE.match(line)
        if not m or m.group(1) not in by_ip:
            continue
        ip, cmd = m.group(1), m.group(2)
        host = found[by_ip[ip]]
        pipelined = re.search(r"python[0-9.]*(?: -)?\s*&& sleep 0", cmd) is not None
        if pipelined or (ip in pending_put and "AnsiballZ_" in cmd):
            pending_put.discard(ip)
            host["module_execs"] += 1
            host["per_task"][task] += 1
            host["modules"][module] += 1
        else:
            host["other_ssh"] += 1
    hosts = {h: {**v, "per_task": dict(v["per_task"]), "modules": dict(v["modules"])} for h, v in found.items()}
    return hosts, control


def host_counts(timer, hosts):
    """Per host: tasks that ran (ok or changed), changed and skipped, from the timer callback."""
    out = {}
    for h in hosts:
        states = [t["hosts"][h] for t in timer["tasks"] if h in t["hosts"]]
        out[h] = {"ran": sum(s in ("ok", "changed") for s in states), "changed": states.count("changed"),
                  "skipped": states.count("skipped"), "failed": states.count("failed")}
    return out


def per_host_median(counts, key):
    return common.median([c[key] for c in counts.values()])


def one_fleet(k, a, workdir, renew_playbook):
    state = tempfile.mkdtemp(prefix=f"fleet{k}-", dir=workdir)
    pki = tempfile.mkdtemp(prefix=f"pki{k}-", dir=workdir)
    name = f"bn{k}x{os.getpid() % 1000}"
    created = None
    try:
        proc = subprocess.run([*HARNESS, "create", "--name", name, "--hosts", str(k), "--state-dir", state,
                               "--groups", f"mtls_servers=1-{k}", "--subnet-index", "auto"],
                              cwd=common.ROOT, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"harness create failed: {proc.stderr[-2000:]}")
        created = json.loads(proc.stdout)
        ips = {h["name"]: h["ip"] for h in created["hosts"]}
        hosts = sorted(ips)
        inventory = created["inventory"]
        vars_file = os.path.join(state, "bench-vars.json")
        with open(vars_file, "w", encoding="utf-8") as f:
            json.dump({"mtls_pki_dir": pki, "mtls_key_location": a.key_location}, f)
        renew_vars = os.path.join(state, "bench-renew-vars.json")
        with open(renew_vars, "w", encoding="utf-8") as f:
            json.dump({"mtls_pki_dir": pki, "mtls_key_location": a.key_location,
                       **({} if renew_playbook else {"mtls_renew_before_days": 30})}, f)
        timer = os.path.join(state, "timer.json")
        extra = ["--forks", str(a.forks)] if a.forks else []

        def play(pb, vf, verbose=False):
            return common.playbook(pb, vf, inventory=inventory, timer_out=timer,
                                   args=extra + (["-vvv"] if verbose else []), timeout=TIMEOUT)

        site, renew = "mtls.rollout.site", renew_playbook or "mtls.rollout.site"
        result = {"k": k, "hosts": hosts, "forks": a.forks or 5, "key_location": a.key_location,
                  "renew_playbook": renew_playbook or
                  "site.yml with mtls_renew_before_days=30"}
        first = play(site, vars_file)
        result["first"] = {"wall": first["seconds"], "per_host": host_counts(first["timer"], hosts),
                           "recap": first["timer"]["recap"]}
        result["first"]["maxrss_mib"] = first["maxrss_mib"]
        labels = (("rerun", site, vars_file), ("renew", renew, renew_vars))
        runs, floors = {label: [] for label, _pb, _vf in labels}, {"adhoc": [], "play": []}
        for _rep in range(a.repeat):  # floor and playbooks side by side in each repetition
            common.settle()
            floors["adhoc"].append(common.timed([os.path.join(common.PROJECT_BIN, "ansible"), "all", "-i", inventory,
                                                 "-m", "ansible.builtin.ping", *extra], env=common.ansible_env(),
                                                timeout=TIMEOUT))
            common.settle()
            floors["play"].append(play(FLOOR_PLAYBOOK, None))
            for label, pb, vf in labels:
                common.settle()
                r = play(pb, vf)
                changed = sum(v.get("changed", 0) for v in r["timer"]["recap"].values())
                runs[label].append({"wall": r["seconds"], "changed": changed, "maxrss_mib": r["maxrss_mib"],
                                    "per_host": host_counts(r["timer"], hosts),
                                    "task_seconds": [(t["name"], t["seconds"]) for t in r["timer"]["tasks"]]})
        result["floor"] = {kind: {"walls": [f["seconds"] for f in fl], "wall": common.median([f["seconds"] for f in fl]),
                                  "maxrss_mib": max(f["maxrss_mib"] for f in fl)} for kind, fl in floors.items()}
        for label, pb, vf in labels:
            counted = play(pb, vf, verbose=True)
            remote, control = count_remote(counted["output"], ips)
            rs = runs[label]
            result[label] = {"walls": [r["wall"] for r in rs], "wall": common.median([r["wall"] for r in rs]),
                             "ratio": common.median([r["wall"] / f["seconds"] for r, f in zip(rs, floors["play"])]),
                             "maxrss_mib": max(r["maxrss_mib"] for r in rs),
                             "changed": max(r["changed"] for r in rs), "per_host": rs[-1]["per_host"],
                             "task_seconds": rs[-1]["task_seconds"],
                             "remote": remote, "control_execs": control, "vvv_wall": counted["seconds"]}
            if a.keep_logs:
                with open(os.path.join(common.RESULTS, f"fleet-{k}-{label}-vvv.log"), "w", encoding="utf-8") as f:
                    f.write(counted["output"])
        return result
    finally:
        subprocess.run([*HARNESS, "destroy", "--state-dir", state], cwd=common.ROOT, capture_output=True,
                       timeout=300, check=False)
        shutil.rmtree(pki, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def row_of(r):
    first, rerun, renew = r["first"], r["rerun"], r["renew"]
    rem, ren = rerun["remote"], renew["remote"]
    return {"k": r["k"], "first_wall": first["wall"],
            "first_tasks": per_host_median(first["per_host"], "ran"),
            "first_changed": per_host_median(first["per_host"], "changed"),
            "rerun_wall": rerun["wall"], "rerun_tasks": per_host_median(rerun["per_host"], "ran"),
            "rerun_changed": rerun["changed"],
            "rerun_execs": max(h["module_execs"] for h in rem.values()),
            "rerun_execs_min": min(h["module_execs"] for h in rem.values()),
            "rerun_other_ssh": max(h["other_ssh"] for h in rem.values()),
            "rerun_control_execs": rerun["control_execs"],
            "renew_wall": renew["wall"], "renew_changed": renew["changed"],
            "renew_execs": max(h["module_execs"] for h in ren.values()),
            "floor_adhoc": r["floor"]["adhoc"]["wall"], "floor_play": r["floor"]["play"]["wall"],
            "rerun_ratio": rerun["ratio"], "renew_ratio": renew["ratio"],
            "first_rss": first["maxrss_mib"], "rerun_rss": rerun["maxrss_mib"],
            "floor_rss": r["floor"]["play"]["maxrss_mib"], "forks": r["forks"]}


COLUMNS = [("k", "hosts"), ("forks", "forks"), ("first_wall", "first run: wall s"),
           ("first_tasks", "first: tasks/host"), ("first_changed", "first: changed/host"),
           ("rerun_wall", "re-run: wall s"), ("rerun_tasks", "re-run: tasks/host"), ("rerun_changed", "re-run: changed"),
           ("rerun_execs", "re-run: remote module execs/host (max)"),
           ("rerun_other_ssh", "re-run: other ssh cmds/host"),
           ("rerun_control_execs", "re-run: module runs on control node (total)"),
           ("renew_wall", "renew: wall s"), ("renew_changed", "renew: changed"),
           ("renew_execs", "renew: remote module execs/host (max)"),
           ("floor_adhoc", "floor: ansible -m ping s"), ("floor_play", "floor: 1-task playbook s"),
           ("rerun_ratio", "re-run / floor"), ("renew_ratio", "renew / floor"),
           ("first_rss", "first: peak RSS MiB"), ("rerun_rss", "re-run: peak RSS MiB"),
           ("floor_rss", "floor: peak RSS MiB")]


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ks = [r["k"] for r in rows]
    for key, label, style in (("first_wall", "first run", "o-"), ("rerun_wall", "idempotent re-run", "s-"),
                              ("renew_wall", "renew (nothing due)", "^-"),
                              ("floor_play", "floor: one-task ping playbook", "k--")):
        ax1.plot(ks, [r.get(key) for r in rows], style, label=label)
    ax1.set(xlabel="hosts (nginx servers)", ylabel="wall seconds (median)",
            title=f"site.yml on test hosts (forks={rows[0]['forks']})")
    ax1.set_xticks(ks)
    ax1.grid(True, alpha=0.3)
    ax1.legend()
    xs = range(len(ks))
    ax2.bar([x - 0.2 for x in xs], [r["rerun_execs"] for r in rows], width=0.4, color="tab:orange", label="re-run")
    ax2.bar([x + 0.2 for x in xs], [r["renew_execs"] for r in rows], width=0.4, color="tab:green", label="renew")
    ax2.set_xticks(list(xs), [str(k) for k in ks])
    ax2.axhline(2, color="tab:red", ls="--", lw=1, label="target: at most 2")
    ax2.set_ylim(0, 5)
    ax2.set(xlabel="hosts", ylabel="remote module executions per host (max)",
            title="Nothing to do: remote module executions per host")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    common.reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default="1,3,10,20,50")
    ap.add_argument("--repeat", type=int, default=3, help="timed re-runs (and renew runs) per fleet")
    ap.add_argument("--forks", type=int, default=0, help="ansible-playbook --forks (default: Ansible's, 5)")
    ap.add_argument("--key-location", choices=["controller", "host"], default="controller",
                    help="mtls_key_location of the fleet (host: each server makes its own key)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the -vvv outputs in bench/results/*.log")
    ap.add_argument("--out", default="fleet")
    ap.add_argument("--replot", action="store_true", help="only redraw table, CSV and PNG from the JSON")
    a = ap.parse_args()
    if a.replot:
        with open(os.path.join(common.RESULTS, f"{a.out}.json"), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        common.write_csv(f"{a.out}.csv", rows, COLUMNS)
        plot(rows, os.path.join(common.RESULTS, f"{a.out}.png"))
        print(common.table(rows, COLUMNS))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench/fleet.py: the test-host harness needs root")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    common.ensure_collection_link()
    renew_yml = os.path.join(common.ROOT, "playbooks", "renew.yml")
    renew_playbook = "mtls.rollout.renew" if os.path.exists(renew_yml) else None
    os.makedirs(os.path.join(common.BENCH, "work"), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="fleet-", dir=os.path.join(common.BENCH, "work"))
    meta = common.machine()
    results = []
    try:
        for k in [int(s) for s in a.sizes.split(",")]:
            r = one_fleet(k, a, workdir, renew_playbook)
            results.append(r)
            row = row_of(r)
            print(f"{k} hosts: first {row['first_wall']:.1f}s, floor {row['floor_play']:.1f}s, re-run "
                  f"{row['rerun_wall']:.1f}s = {row['rerun_ratio']:.2f}x ({row['rerun_execs']} remote module "
                  f"execs/host), renew {row['renew_wall']:.1f}s = {row['renew_ratio']:.2f}x",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [row_of(r) for r in results]
    breakdown = defaultdict(dict)
    for r in results:
        h = r["hosts"][0]
        for label in ("rerun", "renew"):
            breakdown[label][str(r["k"])] = r[label]["remote"][h]
    common.write_json(f"{a.out}.json", {"machine": meta, "args": vars(a), "rows": rows, "raw": results,
                                        "remote_breakdown_first_host": breakdown})
    common.write_csv(f"{a.out}.csv", rows, COLUMNS)
    plot(rows, os.path.join(common.RESULTS, f"{a.out}.png"))
    print(common.table(rows, COLUMNS))
    if results:
        last = results[-1]
        h = last["hosts"][0]
        print(f"\nremote module executions on {h} ({last['k']}-host fleet), by task:")
        for label in ("rerun", "renew"):
            print(f"  {label}: " + json.dumps(last[label]["remote"][h]["per_task"]))
    print(f"\nre-run and renew walls: median of {a.repeat}; results in "
          f"{os.path.relpath(common.RESULTS, common.ROOT)}/{a.out}.{{json,csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
