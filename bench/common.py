"""Shared plumbing of the bench/ scripts: the bench venv, timed runs, ansible-playbook, tables, plots.

The project venv (.venv) runs mtls.rollout exactly as users do, and the crypto floor (so both use the
very same `cryptography` build); bench/.venv (made here, gitignored) holds what only the benchmarks need:
the `ansible` package (community.crypto, the same ansible-core), matplotlib and py-spy.
"""

import json
import os
import platform
import resource
import statistics
import signal
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
VENV = os.path.join(BENCH, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")
PROJECT_BIN = os.path.join(ROOT, ".venv", "bin")
PROJECT_PYTHON = os.path.join(PROJECT_BIN, "python")
COLLECTIONS = os.path.join(ROOT, ".cache", "collections")
STAMP = os.path.join(VENV, ".bench-requirements")


def _requirements():
    with open(os.path.join(BENCH, "requirements.txt"), encoding="utf-8") as f:
        reqs = [line.split("#", 1)[0].strip() for line in f]
    return [r for r in reqs if r]


def ensure_venv():
    """Create or update bench/.venv; returns its python."""
    reqs = _requirements()
    want = "\n".join(reqs) + "\n"
    try:
        with open(STAMP, encoding="utf-8") as f:
            if f.read() == want and os.path.exists(VENV_PYTHON):
                return VENV_PYTHON
    except FileNotFoundError:
        pass
    print(f"bench: preparing {os.path.relpath(VENV, ROOT)} ({', '.join(reqs)})", file=sys.stderr, flush=True)
    if not os.path.exists(VENV_PYTHON):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([VENV_PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs],
                   check=True)
    with open(STAMP, "w", encoding="utf-8") as f:
        f.write(want)
    return VENV_PYTHON


def reexec_in_venv():
    """Run the calling script in bench/.venv (creating it first); returns only when already there."""
    python = ensure_venv()
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(python, [python, sys.argv[0], *sys.argv[1:]])


def ensure_collection_link():
    """The checkout linked as .cache/collections/ansible_collections/mtls/rollout (as `make venv` does)."""
    link = os.path.join(COLLECTIONS, "ansible_collections", "mtls", "rollout")
    if os.path.realpath(link) != os.path.realpath(ROOT):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(ROOT, link)
    if not os.path.exists(os.path.join(PROJECT_BIN, "ansible-playbook")):
        raise SystemExit("bench: the project venv is missing: run `make venv` first")


def ansible_env(timer_out=None, bin_dir=PROJECT_BIN, **extra):
    env = dict(os.environ)
    env.update({"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_HOST_KEY_CHECKING": "False",
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_PIPELINING": "True", "ANSIBLE_CALLBACK_PLUGINS": os.path.join(BENCH, "callback_plugins"),
                "ANSIBLE_CALLBACKS_ENABLED": "mtls_bench_timer", "ANSIBLE_DEPRECATION_WARNINGS": "False",
                "PATH": bin_dir + os.pathsep + env.get("PATH", "")})
    env.pop("ANSIBLE_CONFIG", None)
    if timer_out:
        env["MTLS_BENCH_TIMER_OUT"] = timer_out
    env.update({k: str(v) for k, v in extra.items()})
    return env


def timed(argv, env=None, cwd=ROOT, timeout=3600, check=True):
    """Run ``argv``; returns {seconds, cpu_seconds, maxrss_mib, returncode, output}: CPU time of the process tree,
    and the peak resident set of its largest process (wait4's ru_maxrss: the process or a descendant it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            out = proc.stdout.read()
            _pid, status, usage = os.wait4(proc.pid, 0)  # reaped here (not by Popen) to read its rusage
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if status == signal.SIGKILL:
        raise subprocess.TimeoutExpired(argv, timeout, out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({proc.returncode}):\n{out[-5000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu, "maxrss_mib": usage.ru_maxrss / 1024,
            "returncode": proc.returncode, "output": out}


def playbook(playbook_path, extra_vars_file=None, inventory=None, bin_dir=PROJECT_BIN, timer_out=None, args=(),
             env_extra=None, timeout=3600, check=True):
    """ansible-playbook with the bench timer callback; returns timed() plus the callback's JSON as 'timer'."""
    argv = [os.path.join(bin_dir, "ansible-playbook")]
    if inventory:
        argv += ["-i", str(inventory)]
    argv.append(playbook_path)
    if extra_vars_file:
        argv += ["-e", f"@{extra_vars_file}"]
    argv += list(args)
    if timer_out and os.path.exists(timer_out):
        os.unlink(timer_out)
    result = timed(argv, env=ansible_env(timer_out, bin_dir, **(env_extra or {})), timeout=timeout, check=check)
    result["timer"] = None
    if timer_out and os.path.exists(timer_out):
        with open(timer_out, encoding="utf-8") as f:
            result["timer"] = json.load(f)
    return result


def settle():
    """Flush dirty pages before a timed run, so one run's writeback is not billed to the next."""
    os.sync()
    time.sleep(0.5)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows, columns):
    """A GitHub-flavoured Markdown table of ``rows`` (dicts) with ``columns`` [(key, title)]."""
    cells = [[title for _key, title in columns]] + [[fmt(r.get(key)) for key, _title in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine():
    """What the figures were measured on, and against which tree."""
    def git(*args):
        proc = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host_cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "loadavg_at_start": load}


def write_json(name, data):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path


def write_csv(name, rows, columns):
    import csv
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([key for key, _title in columns])
        for r in rows:
            w.writerow(["" if r.get(key) is None else (round(r[key], 4) if isinstance(r[key], float) else r[key])
                        for key, _title in columns])
    os.replace(path + ".tmp", path)
    return path
