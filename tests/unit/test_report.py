"""The expiry report (plugins/module_utils/pki/report.py)."""

import datetime as dt
import json

from ansible_collections.mtls.rollout.plugins.module_utils.pki import report
import pytest
from pkitest import issue, make_ca, utcnow


@pytest.fixture
def pki(store):
    """root -> int, made a year ago so leaves can be back-dated."""
    past = utcnow() - dt.timedelta(days=365)
    make_ca(store, "root", now=past)
    make_ca(store, "int", "root", now=past)
    return store


def test_rows_sorted_by_days_left_with_status_and_hosts(pki):
    now = utcnow()
    issue(pki, "int", [{"name": "web1-server", "dns": ["web1"], "valid_days": 90},
                       {"name": "app1", "profile": "client", "common_name": "app1", "valid_days": 10},
                       {"name": "old", "profile": "client", "common_name": "old", "valid_days": 1}],
          now=now - dt.timedelta(days=2))  # 'old' has expired, 'app1' has 8 days left
    rows = report.rows(pki, {"web1-server": ["web1"], "app1": ["app1"]}, warn_days=30, now=now)
    assert [r["name"] for r in rows] == ["old", "app1", "web1-server", "int", "root"]
    by = {r["name"]: r for r in rows}
    assert by["old"]["status"] == "expired" and by["old"]["days_left"] < 0
    assert by["app1"]["status"] == "expiring" and abs(by["app1"]["days_left"] - 8) < 0.01
    assert by["web1-server"]["status"] == "ok" and abs(by["web1-server"]["days_left"] - 88) < 0.01
    assert by["web1-server"]["hosts"] == ["web1"] and by["root"]["kind"] == "ca"


def test_due_and_revoked_statuses(pki):
    now = utcnow()
    issue(pki, "int", [{"name": "a", "profile": "client", "common_name": "a", "valid_days": 300}],
          now=now - dt.timedelta(days=250))  # inside the last third of its lifetime
    issue(pki, "int", [{"name": "b", "profile": "client", "common_name": "b"}], now=now)
    index = pki.load_index()
    serial_b = next(r["serial"] for r in index.records if r["name"] == "b")
    for r in index.records:
        if r["serial"] == serial_b:
            r["status"] = "revoked"
    with open(pki.index_path, "wb") as f:
        f.write(index.dumps())
    by = {r["name"]: r for r in report.rows(pki, warn_days=30, now=now)}
    assert by["a"]["status"] == "due" and by["b"]["status"] == "revoked"


def test_table_json_and_html(pki):
    issue(pki, "int", [{"name": "xy", "profile": "client", "common_name": "x<y"}])
    rows = report.rows(pki)
    lines = report.table(rows)
    assert lines[0].split()[:4] == ["DAYS", "STATUS", "KIND", "NAME"] and len(lines) == 1 + len(rows)
    assert json.loads(report.to_json(rows, "now"))["certificates"] == rows
    page = report.to_html(rows, "now", 30)
    assert "&lt;y" in page and "<y" not in page and "<script" not in page and "http" not in page.split("<body>")[1]
