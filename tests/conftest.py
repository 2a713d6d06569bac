"""Make the checkout importable as ``ansible_collections.mtls.rollout`` for every test."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".cache", "collections")


def _link_checkout():
    link = os.path.join(COLLECTIONS, "ansible_collections", "mtls", "rollout")
    if not os.path.islink(link) or os.path.realpath(link) != ROOT:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(ROOT, link)


_link_checkout()
sys.path.insert(0, COLLECTIONS)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # tests.harness, tests.e2e.helpers
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)

from tests import no_skips  # noqa: E402

# the hooks that make a skipped test a failed one (tests/no_skips.py)
pytest_make_collect_report = no_skips.pytest_make_collect_report
pytest_runtest_makereport = no_skips.pytest_runtest_makereport
