"""OpenBao's raw ``pki/sign`` rate (its floor) against the backend's ``sign_many``, on a real server.

  .venv/bin/python bench/openbao_sign.py [--server dev|raft] [--n 100 1000] [--threads 8] [--reps 3]

Starts a server from tests/openbao_server.py (``dev``: in-memory, plain HTTP; ``raft``: a 3-node raft
cluster with TLS, requests to every node in turn through the active one), makes a root CA and the roles,
pre-generates N EC P-256 CSRs, then times for each N (best of --reps):

* floor-1: one plain http.client keep-alive connection, one request after the other;
* floor-T: T threads, each with its own keep-alive connection (the most the server can do);
* sign_many: OpenBaoCA.sign_many over a pool of T connections (parses and checks every certificate).

Prints a table and writes bench/results/openbao_sign-<server>.json. Only the signing loop is timed.
The server and this client share the machine's CPUs: on a busy machine the figures move together.
"""

import argparse
import http.client
import json
import os
import ssl
import sys
import threading
import time
from urllib.parse import urlsplit

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [os.path.join(ROOT, ".cache", "collections"), ROOT]

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao import OpenBaoCA  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao_http import Client  # noqa: E402
from tests.openbao_server import DevServer, RaftCluster  # noqa: E402


def requests_for(n):
    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        out.append({"csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode(), "profile": "client",
                    "common_name": f"client{i}"})
    return out


def floor(addr, token, ca_cert, reqs, threads, mount="root", body=None):
    """Plain keep-alive POSTs to <mount>/sign/client from `threads` threads; seconds for all of reqs.
    ``body(req)`` makes each request's JSON body (default: csr, common_name and format only)."""
    parts = urlsplit(addr)
    ctx = ssl.create_default_context(cafile=ca_cert) if parts.scheme == "https" else None
    headers = {"X-Vault-Token": token, "Content-Type": "application/json"}
    body = body or (lambda r: {"csr": r["csr_pem"], "common_name": r["common_name"], "format": "pem"})
    bodies = [json.dumps(body(r)).encode() for r in reqs]
    chunks = [bodies[i::threads] for i in range(threads)]
    errors = []

    def worker(chunk):
        conn = (http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx) if ctx
                else http.client.HTTPConnection(parts.hostname, parts.port))
        for body in chunk:
            conn.request("POST", f"/v1/{mount}/sign/client", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors.append(resp.status)
        conn.close()
    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.perf_counter() - started
    assert not errors, errors[:5]
    return took


def backend_run(client, reqs):
    started = time.perf_counter()
    results = OpenBaoCA(client).sign_many("root", reqs)
    took = time.perf_counter() - started
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:2]
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("dev", "raft"), default="dev")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    servers = DevServer() if args.server == "dev" else RaftCluster(3)
    rows = []
    with servers as s:
        addrs = [s.addr] if args.server == "dev" else s.addrs
        active = addrs[0] if args.server == "dev" else s.active().addr
        client = Client(addrs, token=s.token, ca_cert=s.ca_cert, pool_size=args.threads)
        ca = OpenBaoCA(client)
        ca.ensure_ca(specs.ca_spec("root"))
        ca.ensure_roles("root")
        for n in args.n:
            reqs = requests_for(n)
            row = {"n": n, "threads": args.threads, "server": args.server}
            for label, run in (("floor_1", lambda: floor(active, s.token, s.ca_cert, reqs, 1)),
                               (f"floor_{args.threads}", lambda: floor(active, s.token, s.ca_cert, reqs, args.threads)),
                               ("sign_many", lambda: backend_run(client, reqs))):
                best = min(run() for _rep in range(args.reps))
                row[label] = {"seconds": round(best, 3), "per_second": round(n / best, 1)}
            row["sign_many_vs_floor"] = round(row["sign_many"]["per_second"]
                                              / row[f"floor_{args.threads}"]["per_second"], 2)
            row["connections_opened"] = client.connections_opened
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'N':>6} {'floor 1 thread':>16} {f'floor {args.threads} threads':>18} {'sign_many':>14} {'ratio':>6}")
    for r in rows:
        floor_t = r[f"floor_{args.threads}"]["per_second"]
        print(f"{r['n']:>6} {r['floor_1']['per_second']:>12.0f} c/s {floor_t:>14.0f} c/s"
              f" {r['sign_many']['per_second']:>10.0f} c/s {r['sign_many_vs_floor']:>6.2f}")
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    with open(os.path.join(BENCH, "results", f"openbao_sign-{args.server}.json"), "w") as f:
        json.dump({"cpus": os.cpu_count(), "loadavg_1min_after": os.getloadavg()[0], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
