"""Issuance benchmark: N client certificates (EC P-256) with PKCS#12 bundles, three ways, side by side.

  python3 bench/issuance.py                       # N = 10, 100, 1000; 3 repetitions; medians
  python3 bench/issuance.py --sizes 10,100 --repeat 1 --community-max 10     # a quick look
  python3 bench/issuance.py --n 10000 --repeat 1 --host-n 0 --out issuance-10000  # the big case

Per N and repetition, in one run of this script:
  floor      bench/floor.py: bare `cryptography` (the project venv's, as the engine), one process, the
             same keys, certificates, bundles and files (also with 2 processes, for reference)
  mtls       mtls.rollout.certificates, ONE task for all N (project venv, the checkout via
             ANSIBLE_COLLECTIONS_PATH=.cache/collections); first run, then the idempotent re-run
  community  community.crypto openssl_privatekey + openssl_csr + x509_certificate (ownca) +
             openssl_pkcs12, each looped per certificate (bench/.venv: the `ansible` package, same
             ansible-core); first run and re-run; only up to --community-max (default 100), larger N
             are extrapolated linearly from the two largest measured sizes and marked so

"wall" is the whole ansible-playbook process (start-up, inventory, templating of the N items, the
module, results); "module" is the task's duration from the bench timer callback (task start to its
result: argument templating and validation, the engine - in Ansible's worker process, as the collection runs
on the control node -, the result); for community it is the sum of its four looped tasks. "RSS" is the peak
resident set of the largest process of the run (ansible-playbook, the worker that runs the engine, or a
bundle worker: wait4()'s ru_maxrss).
"host keys" (--host-n, default 1000) signs N CSRs of keys made on their hosts (key_location: host) in one
task, then re-runs it with the certificates the hosts hold. Results: bench/results/issuance.{json,csv,png}.

  .venv/bin/python bench/issuance.py --backend openbao      # N = 100, 1000, 10000 through OpenBao: ~8 min

--backend openbao (N = 100, 1000, 10000 unless --sizes/--n): a dev OpenBao (tests/openbao_server.py) holds
root -> client-ca (made by mtls.rollout.ca, untimed); per N and repetition: the floor (bench/openbao_sign.py:
the same N CSRs with the backend's request bodies, plain keep-alive POSTs from 1 thread and from as many as
the backend's pool, 8), the engine in-process (bench/profile_openbao.py: host reports + ensure_leaves, no
Ansible), ONE certificates task (key_location host, backend openbao), each into an empty pki_dir, with
the CPU seconds of the client side and of OpenBao, and the Ansible floor of that task: the same play and
items given to playbooks/library/mtls_args_only.py (certificates' argument spec, a result of the same
shape, no work). If that no-op task is slower than floor / 0.8, no module in one task can reach 0.8x.
Results: bench/results/issuance-openbao.{json,csv}.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  pylint: disable=wrong-import-position

PASSWORD = "bench-p12-password"  # the same as bench/floor.py's
PLAYBOOKS = os.path.join(common.BENCH, "playbooks")
TIMEOUT = 3600


def certs_file(workdir, n):
    path = os.path.join(workdir, f"certs-{n}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"certs": [{"name": f"client{i:04d}", "common_name": f"client{i:04d}"} for i in range(n)],
                   "p12_password": PASSWORD}, f)
    return path


def task_seconds(timer, action_suffix=None, names=None):
    total = 0.0
    for t in timer["tasks"]:
        if (action_suffix and t["action"].endswith(action_suffix)) or (names and t["name"] in names):
            total += t["seconds"] or 0.0
    return total


def task_statuses(timer, prefix):
    return sorted({s for t in timer["tasks"] if t["action"].startswith(prefix) for s in t["hosts"].values()})


def p12_info(path):
    """The encryption lines of `openssl pkcs12 -info` for one bundle (to show all three use the same)."""
    if not shutil.which("openssl") or not path or not os.path.exists(path):
        return None
    proc = subprocess.run(["openssl", "pkcs12", "-in", path, "-info", "-noout", "-passin", f"pass:{PASSWORD}"],
                          capture_output=True, text=True, check=False)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.startswith(("MAC:", "PKCS7 Encrypted", "Shrouded Keybag"))]
    return "; ".join(dict.fromkeys(lines))


def run_floor(workdir, n, workers=1):
    out = tempfile.mkdtemp(prefix=f"floor{workers}-{n}-", dir=workdir)
    common.settle()
    r = common.timed([common.PROJECT_PYTHON, os.path.join(common.BENCH, "floor.py"), "--n", str(n), "--out", out,
                      "--workers", str(workers)], timeout=TIMEOUT)
    data = json.loads(r["output"].strip().splitlines()[-1])
    bundle = os.path.join(out, "certs", "client0000", "bundle.p12")
    info = p12_info(bundle)
    assert len(glob.glob(os.path.join(out, "certs", "*", "bundle.p12"))) == n
    shutil.rmtree(out)
    return {"seconds": data["seconds"], "process_seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
            "p12": info}


def run_mtls(workdir, n, vars_file, playbook="mtls_issue.yml", held_certs=False):
    """The mtls.rollout run: first run and idempotent re-run of ONE certificates task, with module time and
    the module process's peak RSS. ``held_certs``: host keys, whose re-run reports the certificates held."""
    pki = tempfile.mkdtemp(prefix=f"mtls-{n}-", dir=workdir)
    timer = os.path.join(workdir, "timer.json")
    env = {"pki_dir": pki}
    setup_vars = os.path.join(workdir, "mtls-vars.json")
    with open(setup_vars, "w", encoding="utf-8") as f:
        json.dump(env, f)
    common.playbook(os.path.join(PLAYBOOKS, "mtls_ca.yml"), setup_vars, timeout=TIMEOUT)
    out = {}
    for phase in ("first", "rerun") + (() if held_certs else ("rerun_changed",)):
        extra = ["-e", "mtls_results=changed"] if phase == "rerun_changed" else []
        if phase == "rerun" and held_certs:  # what the hosts report once the certificates reached them
            with open(vars_file, encoding="utf-8") as f:
                data = json.load(f)
            for item in data["certs"]:
                with open(os.path.join(pki, "certs", item["name"], "cert.pem"), encoding="utf-8") as f:
                    item["held_certificate"] = f.read()
            vars_file = os.path.join(workdir, "held-certs.json")
            with open(vars_file, "w", encoding="utf-8") as f:
                json.dump(data, f)
        common.settle()
        r = common.playbook(os.path.join(PLAYBOOKS, playbook), vars_file, timer_out=timer,
                            args=["-e", f"@{setup_vars}", *extra],
                            timeout=TIMEOUT)
        summary = json.loads(re.search(r'"issued.summary": (\{[^}]*\})', r["output"]).group(1))
        want = "issued" if phase == "first" else "unchanged"
        if summary.get(want) != n:
            raise RuntimeError(f"mtls {phase} run for N={n}: expected {want}={n}, got {summary}")
        out[phase] = {"wall": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                      "module": task_seconds(r["timer"], action_suffix="certificates"),
                      "rss_mib": r["maxrss_mib"],
                      "statuses": task_statuses(r["timer"], "mtls.rollout.certificates"), "summary": summary}
    out["p12"] = p12_info(os.path.join(pki, "certs", "client0000", "bundle.p12"))
    shutil.rmtree(pki)
    return out


def run_host_keys(workdir, n):
    """N certificates for host keys (CSRs) in one task, first run and re-run."""
    items = os.path.join(workdir, f"csrs-{n}.json")
    subprocess.run([common.PROJECT_PYTHON, os.path.join(common.BENCH, "floor.py"), "--make-csrs", str(n),
                    "--out", items], check=True)
    return run_mtls(workdir, n, items, playbook="mtls_issue_host.yml", held_certs=True)


def run_community(workdir, n, vars_file):
    base = tempfile.mkdtemp(prefix=f"community-{n}-", dir=workdir)
    ca_dir, out_dir = os.path.join(base, "ca-store"), os.path.join(base, "out")
    os.makedirs(out_dir)
    subprocess.run([common.VENV_PYTHON, os.path.join(common.BENCH, "floor.py"), "--make-ca", ca_dir], check=True)
    setup_vars = os.path.join(workdir, "community-vars.json")
    with open(setup_vars, "w", encoding="utf-8") as f:
        json.dump({"ca_dir": os.path.join(ca_dir, "ca"), "out_dir": out_dir}, f)
    timer = os.path.join(workdir, "timer.json")
    venv_bin = os.path.join(common.VENV, "bin")
    out = {}
    for phase in ("first", "rerun"):
        common.settle()
        r = common.playbook(os.path.join(PLAYBOOKS, "community_issue.yml"), vars_file, bin_dir=venv_bin,
                            timer_out=timer, args=["-e", f"@{setup_vars}"], timeout=TIMEOUT)
        statuses = task_statuses(r["timer"], "community.crypto.")
        if phase == "rerun" and statuses != ["ok"]:
            raise RuntimeError(f"community re-run for N={n} was not idempotent: {statuses}")
        out[phase] = {"wall": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                      "module": task_seconds(r["timer"], action_suffix=(
                          "openssl_privatekey", "openssl_csr", "x509_certificate", "openssl_pkcs12")),
                      "statuses": statuses}
    if len(glob.glob(os.path.join(out_dir, "*.p12"))) != n:
        raise RuntimeError(f"community run for N={n} did not make {n} bundles")
    out["p12"] = p12_info(os.path.join(out_dir, "client0000.p12"))
    shutil.rmtree(base)
    return out


def extrapolate(points, n):
    """Linear fit through the two largest measured (N, seconds) points, evaluated at n."""
    (n1, t1), (n2, t2) = sorted(points)[-2:]
    slope = (t2 - t1) / (n2 - n1)
    return t2 + slope * (n - n2)


COLUMNS = [
    ("n", "N"),
    ("floor", "floor s"),
    ("floor_2proc", "floor 2-proc s"),
    ("mtls_first_module", "mtls first: module s"),
    ("mtls_first_wall", "mtls first: wall s"),
    ("mtls_vs_floor", "mtls module / floor"),
    ("mtls_vs_floor2", "mtls module / floor 2-proc"),
    ("mtls_rerun_module", "mtls re-run: module s"),
    ("mtls_rerun_wall", "mtls re-run: wall s"),
    ("mtls_rerun_changed_module", "mtls re-run, results: changed: module s"),
    ("mtls_rerun_changed_wall", "mtls re-run, results: changed: wall s"),
    ("mtls_first_rss", "mtls first: RSS MiB"),
    ("mtls_rerun_rss", "mtls re-run: RSS MiB"),
    ("cc_first_module", "community first: module s"),
    ("cc_first_wall", "community first: wall s"),
    ("cc_rerun_module", "community re-run: module s"),
    ("cc_rerun_wall", "community re-run: wall s"),
    ("speedup_wall", "community / mtls (first, wall)"),
    ("speedup_module", "community / mtls (first, module)"),
    ("cc_note", "community figures"),
]


HOST_COLUMNS = [
    ("n", "N (CSRs)"),
    ("first_module", "first: module s"),
    ("first_wall", "first: wall s"),
    ("first_rss_mib", "first: RSS MiB"),
    ("rerun_module", "re-run: module s"),
    ("rerun_wall", "re-run: wall s"),
    ("rerun_rss_mib", "re-run: RSS MiB"),
]


def summarise(raw, sizes, community_max):
    rows = []
    for n in sizes:
        runs = raw[str(n)]
        row = {"n": n, "floor": common.median([r["floor"]["seconds"] for r in runs if r.get("floor")]),
               "floor_2proc": common.median([r["floor_2proc"]["seconds"] for r in runs if r.get("floor_2proc")])}
        for key, tool in (("mtls", "mtls"), ("cc", "community")):
            for phase in ("first", "rerun"):
                for what in ("module", "wall"):
                    row[f"{key}_{phase}_{what}"] = common.median(
                        [r[tool][phase][what] for r in runs if r.get(tool)])
        for what in ("module", "wall"):  # runs recorded before this phase existed have none
            row[f"mtls_rerun_changed_{what}"] = common.median(
                [r["mtls"]["rerun_changed"][what] for r in runs if "rerun_changed" in r.get("mtls", {})])
        row["mtls_vs_floor"] = common.median([r["mtls"]["first"]["module"] / r["floor"]["seconds"] for r in runs
                                              if r.get("floor")])
        row["mtls_vs_floor2"] = common.median([r["mtls"]["first"]["module"] / r["floor_2proc"]["seconds"]
                                               for r in runs if r.get("floor_2proc")])
        for phase in ("first", "rerun"):
            row[f"mtls_{phase}_rss"] = common.median([r["mtls"][phase].get("rss_mib") for r in runs])
        row["cc_note"] = "measured" if n <= community_max else None
        rows.append(row)
    measured = [r for r in rows if r["cc_note"] == "measured" and r["cc_first_wall"] is not None]
    for row in rows:
        if row["cc_note"] is None:
            if len(measured) >= 2:
                for key in ("cc_first_module", "cc_first_wall", "cc_rerun_module", "cc_rerun_wall"):
                    row[key] = extrapolate([(r["n"], r[key]) for r in measured], row["n"])
                row["cc_note"] = "extrapolated"
            else:
                row["cc_note"] = "not run"
        if row["cc_first_wall"] is not None:
            row["speedup_wall"] = row["cc_first_wall"] / row["mtls_first_wall"]
            row["speedup_module"] = row["cc_first_module"] / row["mtls_first_module"]
    return rows


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    ns = [r["n"] for r in rows]
    series = [("floor", "crypto floor (1 process)", "k", "-", "o"),
              ("floor_2proc", "crypto floor (2 processes)", "0.5", ":", "o"),
              ("mtls_first_module", "mtls.rollout first run (module)", "tab:blue", "-", "s"),
              ("mtls_first_wall", "mtls.rollout first run (wall)", "tab:blue", "--", "s"),
              ("cc_first_module", "community.crypto first run (module)", "tab:red", "-", "^"),
              ("cc_first_wall", "community.crypto first run (wall)", "tab:red", "--", "^")]

    def draw(ax, key, label, color, style, marker):
        pts = [(r["n"], r[key]) for r in rows if r.get(key) is not None]
        measured = [p for p, r in zip(pts, [r for r in rows if r.get(key) is not None])
                    if not (key.startswith("cc_") and r["cc_note"] == "extrapolated")]
        if measured:
            ax.plot([p[0] for p in measured], [p[1] for p in measured], style, color=color, marker=marker, label=label)
        if len(measured) < len(pts):  # the extrapolated tail: thin dotted line, hollow marker
            tail = [measured[-1]] + pts[len(measured):]
            ax.plot([p[0] for p in tail], [p[1] for p in tail], ":", color=color, lw=1)
            ax.plot([p[0] for p in tail[1:]], [p[1] for p in tail[1:]], marker, color=color, mfc="none",
                    label=label + ", extrapolated" if style == "-" else None)

    for key, label, color, style, marker in series:
        draw(ax1, key, label, color, style, marker)
    ax1.set(xscale="log", yscale="log", xlabel="certificates with PKCS#12 bundles (N)", ylabel="seconds (median)",
            title="First run: issue N certificates + bundles")
    ax1.grid(True, which="both", alpha=0.3)
    top = max(r[k] for r in rows for k in ("cc_first_wall", "mtls_first_wall", "floor") if r.get(k))
    ax1.set_ylim(top=top * 60)
    ax1.legend(fontsize=7, loc="upper left", ncol=2)
    for key, label, color, style, marker in [
            ("mtls_rerun_module", "mtls.rollout re-run (module)", "tab:blue", "-", "s"),
            ("mtls_rerun_wall", "mtls.rollout re-run (wall)", "tab:blue", "--", "s"),
            ("cc_rerun_module", "community.crypto re-run (module)", "tab:red", "-", "^"),
            ("cc_rerun_wall", "community.crypto re-run (wall)", "tab:red", "--", "^")]:
        draw(ax2, key, label, color, style, marker)
    ax2.axhline(3.0, color="tab:green", lw=1, ls=":", label="target: 3 s module time at N=1000")
    ax2.set(xscale="log", yscale="log", xlabel="certificates (N)", ylabel="seconds (median)",
            title="Idempotent re-run (nothing to do)")
    ax2.grid(True, which="both", alpha=0.3)
    top = max(r[k] for r in rows for k in ("cc_rerun_wall", "mtls_rerun_wall") if r.get(k))
    ax2.set_ylim(top=top * 60)
    ax2.legend(fontsize=7, loc="upper left", ncol=2)
    ax1.set_xticks(ns, [str(n) for n in ns])
    ax2.set_xticks(ns, [str(n) for n in ns])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


OPENBAO_COLUMNS = [
    ("n", "N (CSRs)"),
    ("floor_1", "floor 1 conn: s"),
    ("floor_8", "floor 8 conns: s"),
    ("floor_8_rate", "floor: certs/s"),
    ("engine", "engine: s"),
    ("engine_vs_floor", "engine rate / floor rate"),
    ("mtls_module", "mtls task: module s"),
    ("mtls_wall", "mtls task: wall s"),
    ("mtls_rate", "mtls task: certs/s"),
    ("mtls_vs_floor", "mtls task rate / floor rate"),
    ("args_only", "Ansible floor (same task, args only): module s"),
    ("args_only_wall", "Ansible floor: wall s"),
    ("args_only_vs_floor", "floor rate / Ansible floor (best any task can do; >= 0.8 needed)"),
    ("cpu_floor", "floor CPU s: client + OpenBao"),
    ("cpu_engine", "engine CPU s: client + OpenBao"),
    ("cpu_mtls", "mtls CPU s: ansible-playbook tree + OpenBao"),
    ("cpu_args_only", "Ansible floor CPU s: ansible-playbook tree"),
]


def run_openbao(a, sizes):
    """The openbao backend against OpenBao's own floor, one dev server for the whole run: per N and repetition
    the floor (the backend's request bodies for the same CSRs, plain keep-alive POSTs from 1 and from 8 threads:
    the backend's pool), the engine in-process (``profile_openbao.run_engine``: host reports + ensure_leaves into
    an empty store), ONE certificates task (``playbooks/mtls_issue_host.yml``) into an empty store and the same
    task's Ansible floor (``playbooks/args_only_host.yml``: the same items to a module that does nothing)."""
    import profile_openbao as engine  # noqa: E402  pylint: disable=import-outside-toplevel
    from tests.openbao_server import DevServer  # pylint: disable=import-outside-toplevel
    common.ensure_collection_link()
    os.makedirs(os.path.join(common.BENCH, "work"), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="issuance-openbao-", dir=os.path.join(common.BENCH, "work"))
    meta, raw, rows = common.machine(), {}, []
    try:
        with DevServer() as bao:
            setup = {"backend": "openbao", "openbao": {"addr": bao.addr, "token": bao.token}}

            def setup_vars(pki):
                path = os.path.join(workdir, "openbao-vars.json")
                with open(path, "w", encoding="utf-8") as f:
                    json.dump({**setup, "pki_dir": pki}, f)
                return path
            common.playbook(os.path.join(PLAYBOOKS, "mtls_ca.yml"), setup_vars(tempfile.mkdtemp(dir=workdir)),
                            timeout=TIMEOUT)
            for n in sizes:
                items = os.path.join(workdir, f"csrs-{n}.json")
                subprocess.run([common.PROJECT_PYTHON, os.path.join(common.BENCH, "floor.py"), "--make-csrs", str(n),
                                "--out", items], check=True)
                with open(items, encoding="utf-8") as f:
                    certs = json.load(f)["certs"]
                reqs = engine.floor_requests(certs)
                raw[str(n)] = []
                for rep in range(a.repeat):
                    run = {"load_1min": os.getloadavg()[0]}
                    for threads in (1, engine.POOL):
                        common.settle()
                        seconds, cpu_client, cpu_bao = engine.run_floor(bao, reqs, threads)
                        run[f"floor_{threads}"] = seconds
                        run[f"floor_{threads}_cpu"] = {"client": cpu_client, "openbao": cpu_bao}
                    common.settle()
                    run["engine"] = engine.run_engine(bao, certs, tempfile.mkdtemp(dir=workdir))
                    common.settle()
                    timer = os.path.join(workdir, "timer.json")
                    bao_cpu = engine.cpu_seconds(bao.pid)
                    r = common.playbook(os.path.join(PLAYBOOKS, "mtls_issue_host.yml"), items, timer_out=timer,
                                        args=["-e", f"@{setup_vars(tempfile.mkdtemp(dir=workdir))}"], timeout=TIMEOUT)
                    bao_cpu = engine.cpu_seconds(bao.pid) - bao_cpu
                    summary = json.loads(re.search(r'"issued.summary": (\{[^}]*\})', r["output"]).group(1))
                    if summary.get("issued") != n:
                        raise RuntimeError(f"openbao run for N={n}: expected issued={n}, got {summary}")
                    run["mtls"] = {"wall": r["seconds"], "summary": summary, "cpu_tree": r["cpu_seconds"],
                                   "cpu_openbao": bao_cpu,
                                   "module": task_seconds(r["timer"], action_suffix="certificates")}
                    common.settle()
                    r = common.playbook(os.path.join(PLAYBOOKS, "args_only_host.yml"), items, timer_out=timer,
                                        args=["-e", f"@{setup_vars(tempfile.mkdtemp(dir=workdir))}"], timeout=TIMEOUT)
                    summary = json.loads(re.search(r'"issued.summary": (\{[^}]*\})', r["output"]).group(1))
                    if summary.get("issued") != n:
                        raise RuntimeError(f"args_only run for N={n}: expected issued={n}, got {summary}")
                    run["args_only"] = {"wall": r["seconds"], "cpu_tree": r["cpu_seconds"],
                                        "module": task_seconds(r["timer"], action_suffix="mtls_args_only")}
                    raw[str(n)].append(run)
                    print(f"openbao N={n} #{rep + 1} (load {run['load_1min']:.1f}): floor 1/{engine.POOL} conns "
                          f"{run['floor_1']:.2f}/{run[f'floor_{engine.POOL}']:.2f}s, engine "
                          f"{run['engine']['engine']:.2f}s, mtls task {run['mtls']['module']:.2f}s module / "
                          f"{run['mtls']['wall']:.2f}s wall, Ansible floor (args only) {run['args_only']['module']:.2f}s",
                          file=sys.stderr, flush=True)
                rows.append(openbao_row(n, raw[str(n)]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_at_end"] = os.getloadavg()
    common.write_json(f"{a.out}.json", {"machine": meta, "args": vars(a), "rows": rows, "raw": raw})
    common.write_csv(f"{a.out}.csv", rows, OPENBAO_COLUMNS)
    print(common.table(rows, OPENBAO_COLUMNS))
    print(f"load average at start {meta['loadavg_at_start']}, at end {meta['loadavg_at_end']}; median of "
          f"{a.repeat}; results in {os.path.relpath(common.RESULTS, common.ROOT)}/{a.out}.{{json,csv}}")
    return 0


def openbao_row(n, runs):
    """Medians of the repetitions; each ratio is the median of the per-repetition ratios (floor 8 / X)."""
    def med(get):
        return common.median([get(r) for r in runs])

    def pair(client, server):
        return f"{med(client):.2f} + {med(server):.2f}"
    row = {"n": n, "floor_1": med(lambda r: r["floor_1"]), "floor_8": med(lambda r: r["floor_8"]),
           "engine": med(lambda r: r["engine"]["engine"]),
           "engine_vs_floor": med(lambda r: r["floor_8"] / r["engine"]["engine"]),
           "mtls_module": med(lambda r: r["mtls"]["module"]), "mtls_wall": med(lambda r: r["mtls"]["wall"]),
           "mtls_vs_floor": med(lambda r: r["floor_8"] / r["mtls"]["module"]),
           "args_only": med(lambda r: r["args_only"]["module"]),
           "args_only_wall": med(lambda r: r["args_only"]["wall"]),
           "args_only_vs_floor": med(lambda r: r["floor_8"] / r["args_only"]["module"]),
           "cpu_args_only": f"{med(lambda r: r['args_only']['cpu_tree']):.2f}",
           "cpu_floor": pair(lambda r: r["floor_8_cpu"]["client"], lambda r: r["floor_8_cpu"]["openbao"]),
           "cpu_engine": pair(lambda r: r["engine"]["cpu_client"], lambda r: r["engine"]["cpu_openbao"]),
           "cpu_mtls": pair(lambda r: r["mtls"]["cpu_tree"], lambda r: r["mtls"]["cpu_openbao"])}
    row["floor_8_rate"], row["mtls_rate"] = n / row["floor_8"], n / row["mtls_module"]
    return row


def main():
    if "--backend" in sys.argv and "openbao" in sys.argv:  # no community.crypto: the project venv (it has bao)
        if os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(common.ROOT, ".venv")):
            os.execv(common.PROJECT_PYTHON, [common.PROJECT_PYTHON, sys.argv[0], *sys.argv[1:]])
    else:
        common.reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", help="N values (default 10,100,1000; with --backend openbao 100,1000,10000)")
    ap.add_argument("--n", type=int, help="one size only (e.g. --n 10000), instead of --sizes")
    ap.add_argument("--host-n", type=int, default=1000, help="N of the host-key case (0: skip it)")
    ap.add_argument("--no-floor-1proc", action="store_true", help="skip the 1-process floor (e.g. at N = 10000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--community-max", type=int, default=100, help="largest N run with community.crypto")
    ap.add_argument("--community-repeat", type=int, help="repetitions of the community runs (default: --repeat)")
    ap.add_argument("--no-floor-2proc", action="store_true", help="skip the 2-process floor (informational)")
    ap.add_argument("--workdir", help="scratch directory (default: a temp dir under bench/work)")
    ap.add_argument("--out", default="issuance", help="result file stem in bench/results")
    ap.add_argument("--replot", action="store_true", help="only redraw table, CSV and PNG from the JSON")
    ap.add_argument("--backend", choices=("local", "openbao"), default="local",
                    help="openbao: the openbao backend against OpenBao's raw pki/sign floor (N = 100, 1000, 10000)")
    a = ap.parse_args()
    if a.backend == "openbao":
        if a.out == "issuance":
            a.out = "issuance-openbao"
        return run_openbao(a, [a.n] if a.n else [int(x) for x in (a.sizes or "100,1000,10000").split(",")])
    if a.replot:
        with open(os.path.join(common.RESULTS, f"{a.out}.json"), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        common.write_csv(f"{a.out}.csv", rows, COLUMNS)
        plot(rows, os.path.join(common.RESULTS, f"{a.out}.png"))
        print(common.table(rows, COLUMNS))
        return 0
    sizes = [a.n] if a.n else [int(s) for s in (a.sizes or "10,100,1000").split(",")]
    cc_repeat = a.repeat if a.community_repeat is None else a.community_repeat
    common.ensure_collection_link()
    os.makedirs(os.path.join(common.BENCH, "work"), exist_ok=True)
    workdir = a.workdir or tempfile.mkdtemp(prefix="issuance-", dir=os.path.join(common.BENCH, "work"))
    meta = common.machine()
    raw = {}
    try:
        for n in sizes:
            vars_file = certs_file(workdir, n)
            raw[str(n)] = []
            for rep in range(a.repeat):
                run = {} if a.no_floor_1proc else {"floor": run_floor(workdir, n)}
                if not a.no_floor_2proc:
                    run["floor_2proc"] = run_floor(workdir, n, workers=2)
                run["mtls"] = run_mtls(workdir, n, vars_file)
                if n <= a.community_max and rep < cc_repeat:
                    run["community"] = run_community(workdir, n, vars_file)
                raw[str(n)].append(run)
                floors = "/".join(f"{run[k]['seconds']:.2f}" for k in ("floor", "floor_2proc") if k in run)
                print(f"N={n} #{rep + 1}: floor (1/2 proc) {floors}s, mtls first "
                      f"{run['mtls']['first']['module']:.2f}s module / {run['mtls']['first']['wall']:.2f}s wall "
                      f"{run['mtls']['first']['rss_mib']:.0f} MiB, "
                      f"re-run {run['mtls']['rerun']['module']:.2f}s / {run['mtls']['rerun']['wall']:.2f}s "
                      f"{run['mtls']['rerun']['rss_mib']:.0f} MiB, re-run (results: changed) "
                      f"{run['mtls']['rerun_changed']['module']:.2f}s / {run['mtls']['rerun_changed']['wall']:.2f}s"
                      + (f"; community first {run['community']['first']['wall']:.1f}s, re-run "
                         f"{run['community']['rerun']['wall']:.1f}s" if "community" in run else ""),
                      file=sys.stderr, flush=True)
        host = []
        for rep in range(a.repeat if a.host_n else 0):
            host.append(run_host_keys(workdir, a.host_n))
            print(f"host keys N={a.host_n} #{rep + 1}: first {host[-1]['first']['module']:.2f}s module / "
                  f"{host[-1]['first']['wall']:.2f}s wall, re-run {host[-1]['rerun']['module']:.2f}s / "
                  f"{host[-1]['rerun']['wall']:.2f}s", file=sys.stderr, flush=True)
    finally:
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = summarise(raw, sizes, a.community_max)
    host_row = None
    if host:
        host_row = {"n": a.host_n, **{f"{phase}_{what}": common.median([h[phase][what] for h in host])
                                      for phase in ("first", "rerun") for what in ("module", "wall", "rss_mib")}}
    p12 = {tool: next((r[key]["p12"] for runs in raw.values() for r in runs if r.get(key)), None)
           for tool, key in (("floor", "floor"), ("mtls", "mtls"), ("community", "community"))}
    meta["loadavg_at_end"] = os.getloadavg()
    common.write_json(f"{a.out}.json", {"machine": meta, "args": vars(a), "rows": rows, "raw": raw,
                                        "pkcs12_settings": p12, "host_keys": host_row, "host_keys_raw": host})
    common.write_csv(f"{a.out}.csv", rows, COLUMNS)
    plot(rows, os.path.join(common.RESULTS, f"{a.out}.png"))
    print(common.table(rows, COLUMNS))
    if host_row:
        print("\nHost keys (key_location: host, CSRs signed, no keys or bundles in the store):")
        print(common.table([host_row], HOST_COLUMNS))
    print(f"load average at start {meta['loadavg_at_start']}, at end {meta['loadavg_at_end']}")
    print(f"\nPKCS#12 settings seen by openssl: {json.dumps(p12, indent=1)}")
    print(f"median of {a.repeat} repetitions (community: {cc_repeat}); results in "
          f"{os.path.relpath(common.RESULTS, common.ROOT)}/{a.out}.{{json,csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
