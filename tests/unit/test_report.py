"""The expiry report (plugins/module_utils/pki/report.py)."""

import datetime as dt
import json
import re
import subprocess

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


def _openssl_serial(path):
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", path], capture_output=True, text=True,
                         check=True).stdout
    return out.strip().split("=", 1)[1]


def test_serials_as_openssl_prints_them(pki):
    assert report.openssl_serial(0xF2B6) == "F2B6" and report.openssl_serial(0xF2B) == "0F2B"
    assert report.openssl_serial(0x1) == "01"
    issue(pki, "int", [{"name": "web1-server", "dns": ["web1"]}])
    by = {r["name"]: r for r in report.rows(pki)}
    assert by["web1-server"]["serial"] == _openssl_serial(pki.leaf_path("web1-server", "cert.pem"))
    assert by["root"]["serial"] == _openssl_serial(pki.ca_path("root", "cert.pem"))
    assert "web1-server" in "\n".join(report.table(list(by.values())))
    assert by["web1-server"]["serial"] in "\n".join(report.table(list(by.values())))  # whole, not cut


@pytest.fixture
def fleet_rows(pki):
    """root -> int -> web1-server (on web1, web2), app1 (revoked), old (expired), a (due)."""
    now = utcnow()
    issue(pki, "int", [{"name": "web1-server", "dns": ["web1"]},
                       {"name": "app1", "profile": "client", "common_name": "app1"}], now=now)
    issue(pki, "int", [{"name": "old", "profile": "client", "common_name": "old", "valid_days": 1}],
          now=now - dt.timedelta(days=3))
    issue(pki, "int", [{"name": "a", "profile": "client", "common_name": "a", "valid_days": 300}],
          now=now - dt.timedelta(days=250))
    index = pki.load_index()
    for r in index.records:
        if r["name"] == "app1":
            r["status"] = "revoked"
    with open(pki.index_path, "wb") as f:
        f.write(index.dumps())
    return report.rows(pki, {"web1-server": ["web1", "web2"], "app1": ["app1"]}, now=now), now


def test_rows_know_their_issuer_and_lifetime(fleet_rows):
    rows, _now = fleet_rows
    by = {r["name"]: r for r in rows}
    assert by["root"]["issuer_name"] is None and by["int"]["issuer_name"] == "root"
    assert {by[n]["issuer_name"] for n in ("web1-server", "app1", "old", "a")} == {"int"}
    a = by["a"]
    assert a["not_before"] < a["renew_from"] < a["not_after"]


def test_html_timeline_and_ca_tree(fleet_rows):
    rows, now = fleet_rows
    page = report.to_html(rows, "2026-01-01T00:00:00Z", 30, now=now)
    body = page.split("<body>")[1]
    assert "<script" not in page and "http" not in body and "url(" not in page.replace("url(#hatch)", "")
    svg = re.search(r"<svg .*?</svg>", page, re.S).group(0)
    assert len(re.findall(r"<g class='bar (\w+)'>", svg)) == len(rows)  # one bar per certificate
    assert re.findall(r"<g class='bar (\w+)'>", svg).count("revoked") == 1 and "⊘ revoked" in svg
    assert "✕ expired" in svg and ">now</text>" in svg and svg.count("url(#hatch)") == len(rows)
    tree = re.search(r"<ul class=tree>.*?</ul></li></ul>", page, re.S).group(0)
    # root holds int, int holds the leaves; hosts are named with the leaf they hold
    assert tree.index(">root<") < tree.index(">int<") < tree.index(">web1-server<")
    assert re.search(r">web1-server</span>.*?on web1, web2", tree)
    assert re.search(r"class='struck'>app1<", tree)
