"""Helpers for the end-to-end tests: run playbooks against a test fleet, talk TLS to it."""

import json
import os
import re
import subprocess
import time
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ansible_env():
    env = dict(os.environ)
    env.update({"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".cache", "collections"),
                "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_PIPELINING": "True"})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def run_playbook(playbook, inventory, extra_vars=None, *args, check=True):
    """ansible-playbook with extra vars given as JSON; returns (returncode, output)."""
    argv = ["ansible-playbook", "-i", str(inventory), playbook]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    argv += list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(), cwd=ROOT, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        if os.environ.get("MTLS_PLAYBOOK_LOG"):  # the whole output, for debugging a failed run
            with open(os.environ["MTLS_PLAYBOOK_LOG"], "w") as f:
                f.write(out)
        raise AssertionError(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{out[-6000:]}")
    return proc.returncode, out


def recap(output):
    """PLAY RECAP as {host: {ok, changed, failed, ...}}."""
    found = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return found


def curl(url, cert=None, key=None, cacert=None, resolve=None):
    """(HTTP status, body) of a GET with curl; status 0 when the TLS handshake itself failed."""
    argv = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", url]
    if cert:
        argv += ["--cert", cert, "--key", key]
    if cacert:
        argv += ["--cacert", cacert]
    if resolve:
        argv += ["--resolve", resolve]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    body, _sep, status = proc.stdout.rpartition("\n")
    return int(status or 0), body + proc.stderr


def curl_until(want, url, timeout=10.0, **kwargs):
    """``curl`` until the status is ``want`` or ``timeout`` s passed; the last (status, body). nginx applies a reload
    asynchronously: for a moment after the reload command returned, workers of the old configuration may still
    answer a new connection (renew.yml and the canary gate wait for the served certificate the same way)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = curl(url, **kwargs)
        if status == want or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


def changed_tasks(output, host):
    """Names of the tasks that reported changed for ``host`` in a playbook's output."""
    found, task = [], None
    for line in output.splitlines():
        m = re.match(r"^TASK \[(.*)\]", line)
        if m:
            task = m.group(1)
        elif re.match(rf"^changed: \[{re.escape(host)}[\]\s-]", line):
            found.append(task)
    return found


def ca_pem(pki_dir, name):
    """The PEM of CA ``name`` in the store at ``pki_dir``."""
    with open(f"{pki_dir}/ca/{name}/cert.pem") as f:
        return f.read()


def squash(text):
    """``text`` without whitespace (to find a PEM inside a bundle whatever its line breaks)."""
    return re.sub(r"\s", "", text)
