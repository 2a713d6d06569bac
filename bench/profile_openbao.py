"""The openbao backend's module path in-process (no Ansible) against a real dev OpenBao, beside OpenBao's floor.

  .venv/bin/python bench/profile_openbao.py --n 1000             # per repetition: the floor, then the engine
  .venv/bin/python bench/profile_openbao.py --n 1000 --cprofile  # plus the engine's top functions (last repetition)

Starts ``bao server -dev`` (tests/openbao_server.py), makes root -> client-ca through the backend, then for N
host-key CSRs (EC P-256) times (a) OpenBao's raw ``pki/sign`` floor: the same CSRs and request bodies
(``openbao.sign_body``) as plain keep-alive POSTs from 8 threads (``openbao_sign.floor``), and (b) what the
certificates module does after Ansible's argument validation: the host reports (each CSR read, its signature
checked), then ``ensure_leaves`` (signing over the backend's pool of 8 keep-alive connections, each certificate
checked against its CSR's key and the requested names, and the store written as a cache), into an empty store.
CPU seconds of the client (this process and its forked writers) and of OpenBao are shown beside each; they share
the machine's cores. ``bench/issuance.py --backend openbao`` records the same engine figures with the module's.
"""

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, os.path.join(ROOT, ".cache", "collections"), ROOT]

# pylint: disable=wrong-import-position
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

import openbao_sign  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki import csr, specs, store  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends import choice  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao import sign_body  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves  # noqa: E402
from tests.openbao_server import DevServer  # noqa: E402

# the bench playbook's defaults (playbooks/mtls_issue_host.yml)
DEFAULTS = {"profile": "client", "key_type": "ec", "curve": "P-256", "key_location": "host"}
POOL = 8  # the backend's default pool of keep-alive connections, and the floor's threads


def cpu_seconds(pid=None):
    """CPU seconds (user + system) of process ``pid`` (from /proc), or of this process and its reaped children."""
    if pid is not None:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def make_items(n):
    """[{name, common_name, csr}] of N hosts' EC P-256 keys (as ``floor.py --make-csrs`` writes them)."""
    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"client{i:04d}"
        req = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256())
        out.append({"name": name, "common_name": name, "csr": req.public_bytes(serialization.Encoding.PEM).decode()})
    return out


def floor_requests(items):
    """What the backend sends for each item (``OpenBaoBackend.sign_many``), for ``openbao_sign.floor``."""
    leaf = [specs.leaf_spec({"name": i["name"], "common_name": i["common_name"]}, DEFAULTS) for i in items]
    return [{"csr_pem": i["csr"], "common_name": s.subject.common_name, "dns": list(s.dns), "ip": list(s.ip),
             "email": list(s.email), "ttl_days": s.valid_days} for i, s in zip(items, leaf)]


def run_floor(bao, reqs, threads=POOL):
    """(seconds, client CPU s, OpenBao CPU s) of the floor: the backend's request bodies, plain keep-alive POSTs."""
    cpu = cpu_seconds(), cpu_seconds(bao.pid)
    seconds = openbao_sign.floor(bao.addr, bao.token, None, reqs, threads, mount="client-ca", body=sign_body)
    return seconds, cpu_seconds() - cpu[0], cpu_seconds(bao.pid) - cpu[1]


def run_engine(bao, items, pki_dir, prof=None):
    """The module path after argument validation, into an empty store: {reports, ensure_leaves (s), cpu_client,
    cpu_openbao}."""
    leaf = [specs.leaf_spec({"name": i["name"], "common_name": i["common_name"]}, DEFAULTS) for i in items]
    s = store.Store(pki_dir)
    started, cpu = time.perf_counter(), (cpu_seconds(), cpu_seconds(bao.pid))
    if prof:
        prof.enable()
    reports = {i["name"]: csr.host_report(i["name"], i["csr"]) for i in items}
    reported = time.perf_counter()
    backend = choice.backend(s, "openbao", {"addr": bao.addr, "token": bao.token})
    results = ensure_leaves(s, "client-ca", leaf, reports=reports, backend=backend)
    if prof:
        prof.disable()
    done = time.perf_counter()
    if [r["action"] for r in results] != ["issued"] * len(items):
        raise RuntimeError(f"engine run: expected {len(items)} issued, got {results[:2]}")
    return {"reports": reported - started, "ensure_leaves": done - reported, "engine": done - started,
            "cpu_client": cpu_seconds() - cpu[0], "cpu_openbao": cpu_seconds(bao.pid) - cpu[1]}


def make_hierarchy(bao, pki_dir):
    setup = choice.backend(store.Store(pki_dir), "openbao", {"addr": bao.addr, "token": bao.token})
    setup.ensure_ca(specs.ca_spec("root"))
    setup.ensure_ca(specs.ca_spec("client-ca", issuer="root", path_length=0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    os.makedirs(os.path.join(BENCH, "work"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="profile-openbao-", dir=os.path.join(BENCH, "work"))
    try:
        with DevServer() as bao:
            make_hierarchy(bao, os.path.join(work, "setup"))
            items = make_items(a.n)
            reqs = floor_requests(items)
            for rep in range(a.reps):
                floor, floor_client, floor_bao = run_floor(bao, reqs)
                os.sync()
                prof = cProfile.Profile() if a.cprofile and rep == a.reps - 1 else None
                e = run_engine(bao, items, os.path.join(work, f"pki-{rep}"), prof)
                print(f"N={a.n} #{rep + 1} (load {os.getloadavg()[0]:.1f}): floor ({POOL} conns) {floor:.2f}s, CPU "
                      f"client {floor_client:.2f}s + OpenBao {floor_bao:.2f}s; engine: reports {e['reports']:.2f}s + "
                      f"ensure_leaves {e['ensure_leaves']:.2f}s, CPU client {e['cpu_client']:.2f}s + OpenBao "
                      f"{e['cpu_openbao']:.2f}s; floor / engine = {floor / e['engine']:.2f}", flush=True)
                if prof:
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(a.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
