"""Profile the engine in-process: ensure_leaves for N client certificates with `modern` PKCS#12 bundles.

  .venv/bin/python bench/profile_engine.py --n 1000            # first run and idempotent re-run, timings
  .venv/bin/python bench/profile_engine.py --n 1000 --cprofile # plus the re-run's top functions (cumulative)
  (--profile-first profiles the first run too)

Runs with the project venv (it imports the engine from the checkout, no Ansible). Bundles are made by
forked worker processes, whose time cProfile shows as the parent waiting (`pool.map`); for a view of the
workers, run it under `bench/.venv/bin/py-spy record --subprocesses -o profile.svg -- ...`.
"""

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), ".cache", "collections"))

# pylint: disable=wrong-import-position
from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs, store  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_ca import ensure_ca  # noqa: E402
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--store", help="use (and keep) this store: a second call re-runs both phases")
    ap.add_argument("--profile-first", action="store_true", help="profile the first run too (slow at N = 10000)")
    a = ap.parse_args()
    os.makedirs(os.path.join(BENCH, "work"), exist_ok=True)
    root = a.store or tempfile.mkdtemp(prefix="profile-", dir=os.path.join(BENCH, "work"))
    try:
        s = store.Store(root)
        ensure_ca(s, specs.ca_spec("root"))
        ensure_ca(s, specs.ca_spec("client-ca", issuer="root", path_length=0))
        defaults = {"profile": "client", "pkcs12": {"password": "bench-p12-password", "encryption": "modern"}}
        leaf_specs = [specs.leaf_spec({"name": f"client{i:04d}", "common_name": f"client{i:04d}"}, defaults)
                      for i in range(a.n)]
        for phase in ("first run", "re-run"):
            os.sync()
            prof = cProfile.Profile() if a.cprofile and (phase == "re-run" or a.profile_first) else None
            start = time.perf_counter()
            if prof:
                prof.enable()
            results = ensure_leaves(s, "client-ca", leaf_specs)
            if prof:
                prof.disable()
            seconds = time.perf_counter() - start
            actions = {}
            for r in results:
                actions[r["action"]] = actions.get(r["action"], 0) + 1
            print(f"{phase}: {seconds:.2f} s for N={a.n} {actions}")
            if prof:
                pstats.Stats(prof).sort_stats("cumulative").print_stats(a.top)
    finally:
        if not a.store:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
