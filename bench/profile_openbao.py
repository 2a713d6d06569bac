"""Profile the openbao backend's module path in-process (no Ansible) against a real dev OpenBao.

  .venv/bin/python bench/profile_openbao.py --n 1000             # phases: reports, ensure_leaves, and the floor
  .venv/bin/python bench/profile_openbao.py --n 1000 --cprofile  # plus ensure_leaves' top functions

Starts ``bao server -dev`` (tests/openbao_server.py), makes root -> client-ca through the backend, then for N
host-key CSRs (EC P-256) times what the certificates module does after argument validation: the host reports
(CSR parsing and signature checks), then ``ensure_leaves`` (signing over the pool of 8 keep-alive connections and
writing the store as a cache), and, on the same CSRs, OpenBao's raw ``pki/sign`` floor over 8 connections
(``openbao_sign.floor``). Only CPU of this process is shown by cProfile; OpenBao runs beside it on the same cores.
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
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves  # noqa: E402
from tests.openbao_server import DevServer  # noqa: E402


def cpu_seconds(pid=None):
    """CPU seconds (user + system) of process ``pid`` from /proc, or of this process and its reaped children
    (the store's forked writers)."""
    if pid is not None:
        fields = open(f"/proc/{pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def csrs(n):
    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"client{i:04d}")])
        req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        out.append((f"client{i:04d}", req.public_bytes(serialization.Encoding.PEM).decode()))
    return out


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
            opts = {"addr": bao.addr, "token": bao.token}
            setup = choice.backend(store.Store(os.path.join(work, "setup")), "openbao", opts)
            setup.ensure_ca(specs.ca_spec("root"))
            setup.ensure_ca(specs.ca_spec("client-ca", issuer="root", path_length=0))
            items = csrs(a.n)
            reqs = [{"csr_pem": c, "common_name": name} for name, c in items]
            defaults = {"profile": "client", "key_type": "ec", "curve": "P-256", "key_location": "host"}
            leaf_specs = [specs.leaf_spec({"name": name, "common_name": name}, defaults) for name, _c in items]
            for rep in range(a.reps):
                floor_cpu = cpu_seconds(), cpu_seconds(bao.pid)
                floor = openbao_sign.floor(bao.addr, bao.token, None, reqs, 8, mount="client-ca")
                floor_cpu = cpu_seconds() - floor_cpu[0], cpu_seconds(bao.pid) - floor_cpu[1]
                os.sync()
                s = store.Store(os.path.join(work, f"pki-{rep}"))
                prof = cProfile.Profile() if a.cprofile and rep == a.reps - 1 else None
                started = time.perf_counter()
                cpu = cpu_seconds(), cpu_seconds(bao.pid)
                if prof:
                    prof.enable()
                reports = {name: csr.host_report(name, c) for name, c in items}
                reported = time.perf_counter()
                backend = choice.backend(s, "openbao", opts)
                results = ensure_leaves(s, "client-ca", leaf_specs, reports=reports, backend=backend)
                if prof:
                    prof.disable()
                done = time.perf_counter()
                cpu = cpu_seconds() - cpu[0], cpu_seconds(bao.pid) - cpu[1]
                assert all(r["action"] == "issued" for r in results), results[:2]
                print(f"N={a.n} #{rep + 1} (load {os.getloadavg()[0]:.1f}): floor (8 conns) {floor:.2f}s, CPU client "
                      f"{floor_cpu[0]:.2f}s + OpenBao {floor_cpu[1]:.2f}s; module path: reports "
                      f"{reported - started:.2f}s, ensure_leaves {done - reported:.2f}s, CPU client {cpu[0]:.2f}s "
                      f"+ OpenBao {cpu[1]:.2f}s; floor / ensure_leaves = {floor / (done - reported):.2f}", flush=True)
                if prof:
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(a.top)
                    pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
