"""Expiry report over the store: every CA and leaf, sorted by days left, as rows, JSON and HTML."""

import html
import json
import os

from . import pem
from .renewal import due

STATUS_ORDER = ("expired", "revoked", "expiring", "due", "ok")


def rows(store, hosts_by_name=None, warn_days=30, now=None):
    """One row per certificate in the store; ``hosts_by_name`` maps a certificate name to its hosts."""
    now = now or pem.utcnow()
    hosts_by_name = hosts_by_name or {}
    revoked = {r["serial"] for r in store.load_index().records if r.get("status") == "revoked"}
    out = []
    for kind, base in (("ca", os.path.join(store.root, "ca")), ("leaf", os.path.join(store.root, "certs"))):
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            path = os.path.join(base, name, "cert.pem")
            data = store.read(path)
            if data is None:
                continue
            cert = pem.load_cert(data, path)
            left = pem.days_left(cert, now)
            serial = pem.serial_hex(cert)
            if left <= 0:
                status = "expired"
            elif serial in revoked:
                status = "revoked"
            elif left <= warn_days:
                status = "expiring"
            elif due(cert, None, now):
                status = "due"
            else:
                status = "ok"
            out.append({"name": name, "kind": kind, "hosts": sorted(hosts_by_name.get(name, [])),
                        "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
                        "serial": serial, "not_after": pem.iso(cert.not_valid_after_utc),
                        "days_left": round(left, 1), "status": status})
    return sorted(out, key=lambda r: (r["days_left"], r["name"]))


def table(report_rows):
    """A plain-text table, one line per certificate."""
    head = ("DAYS", "STATUS", "KIND", "NAME", "HOSTS", "NOT AFTER", "SERIAL")
    lines = [(f"{r['days_left']:.1f}", r["status"], r["kind"], r["name"], ",".join(r["hosts"]) or "-",
              r["not_after"], r["serial"][:16]) for r in report_rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *lines]]


def to_json(report_rows, generated):
    return json.dumps({"generated": generated, "certificates": report_rows}, indent=1) + "\n"


_COLOURS = {"expired": "#b00020", "revoked": "#6a1b9a", "expiring": "#e65100", "due": "#f9a825", "ok": "#2e7d32"}


def to_html(report_rows, generated, warn_days):
    """A self-contained page (inline CSS, no scripts or external resources)."""
    counts = {s: sum(r["status"] == s for r in report_rows) for s in STATUS_ORDER}
    cells = "".join(
        f"<tr><td class=num>{r['days_left']:.1f}</td><td><span class=tag style='background:{_COLOURS[r['status']]}'>"
        f"{r['status']}</span></td><td>{r['kind']}</td><td>{html.escape(r['name'])}</td>"
        f"<td>{html.escape(', '.join(r['hosts']) or '-')}</td><td>{r['not_after']}</td>"
        f"<td><code>{r['serial']}</code></td><td>{html.escape(r['subject'])}</td></tr>" for r in report_rows)
    summary = " · ".join(f"{n} {s}" for s, n in counts.items() if n)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mTLS certificate expiry</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}td.num{{text-align:right}}
.tag{{color:#fff;border-radius:3px;padding:.1em .5em}}code{{font-size:12px}}</style></head>
<body><h1>mTLS certificate expiry</h1>
<p>Generated {generated}; warning threshold {warn_days:g} days. {summary}</p>
<table><tr><th>Days left</th><th>Status</th><th>Kind</th><th>Name</th><th>Hosts</th><th>Not after</th>
<th>Serial</th><th>Subject</th></tr>{cells}</table></body></html>
"""
