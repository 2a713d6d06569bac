"""The expiry report of a fleet, as a person sees it: report.yml on a store with servers, clients, a revoked
and an expired certificate, then headless Chromium renders expiry.html (no network) and the screenshot is
kept in artifacts/report/ (look at it when the report changes)."""

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from tests.e2e.helpers import ROOT, run_playbook
from tests.unit.pkitest import issue, make_ca, utcnow

ARTIFACTS = os.path.join(ROOT, "artifacts", "report")
CHROMIUM = "/usr/bin/chromium"

INVENTORY = """
all:
  children:
    mtls_servers:
      hosts:
        web1: {ansible_host: 192.0.2.11}
        web2: {ansible_host: 192.0.2.12}
    mtls_clients:
      hosts:
        app1: {ansible_host: 192.0.2.21}
        app2: {ansible_host: 192.0.2.22}
"""


def _fleet_store(path):
    store = Store(str(path))
    past, now = utcnow() - dt.timedelta(days=400), utcnow()
    make_ca(store, "root", path_length=1, now=past)
    make_ca(store, "server-ca", "root", now=past)
    make_ca(store, "client-ca", "root", now=past)
    issue(store, "server-ca", [{"name": "web1-server", "dns": ["web1"]}], now=now - dt.timedelta(days=100))
    issue(store, "server-ca", [{"name": "web2-server", "dns": ["web2"]}], now=now - dt.timedelta(days=10))
    issue(store, "client-ca", [{"name": "app1", "profile": "client", "common_name": "app1"},
                               {"name": "app2", "profile": "client", "common_name": "app2"}], now=now)
    issue(store, "client-ca", [{"name": "alice", "profile": "client", "common_name": "alice", "valid_days": 30}],
          now=now - dt.timedelta(days=40))  # expired
    index = store.load_index()
    for record in index.records:
        if record["name"] == "app2":
            record["status"] = "revoked"
    with open(store.index_path, "wb") as f:
        f.write(index.dumps())
    return store


def test_report_renders_in_chromium(tmp_path, ansible_ok):
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (apt-get install chromium)"
    store = _fleet_store(tmp_path / "pki")
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    reports = tmp_path / "reports"
    run_playbook("mtls.rollout.report", tmp_path / "inventory.yml",
                 {"mtls_pki_dir": store.root, "mtls_report_dir": str(reports)})
    page = (reports / "expiry.html").read_text()
    assert "<script" not in page and not re.search(r"(src|href)=", page)  # nothing to fetch
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(reports / "expiry.html", os.path.join(ARTIFACTS, "expiry.html"))
    png = os.path.join(ARTIFACTS, "expiry.png")
    if os.path.exists(png):
        os.unlink(png)
    profile = tempfile.mkdtemp(prefix="mtls-chromium-")
    try:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--hide-scrollbars", "--window-size=1280,1500", f"--screenshot={png}",
             f"file://{reports / 'expiry.html'}"],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0 and os.path.exists(png), done.stderr[-3000:]
    with open(png, "rb") as f:
        data = f.read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20000, len(data)  # a rendered page, not blank
