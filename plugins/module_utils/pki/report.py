"""Expiry report over the store: every CA and leaf, sorted by days left, as rows, JSON and HTML (a table, a
timeline and the CA tree; one self-contained page)."""

import datetime as dt
import html
import json

from . import pem
from .backends.local import LocalBackend
from .renewal import due

STATUS_ORDER = ("expired", "revoked", "expiring", "due", "ok")


def openssl_serial(number):
    """A serial as ``openssl x509 -serial`` and nginx's $ssl_client_serial print it: upper-case hex, even length."""
    text = format(number, "X")
    return "0" + text if len(text) % 2 else text


def rows(store, hosts_by_name=None, warn_days=30, now=None):
    """One row per certificate in the store; ``hosts_by_name`` maps a certificate name to its hosts."""
    return rows_of(LocalBackend(store).list_issued(), hosts_by_name, warn_days, now)


def rows_of(issued, hosts_by_name=None, warn_days=30, now=None):
    """One row per certificate a backend lists (``Backend.list_issued``), soonest expiry first."""
    now = now or pem.utcnow()
    hosts_by_name = hosts_by_name or {}
    out, ca_by_subject = [], {}
    for item in issued:
        name, kind, cert = item["name"], item["kind"], item["cert"]
        left = pem.days_left(cert, now)
        if left <= 0:
            status = "expired"
        elif item["revoked"]:
            status = "revoked"
        elif left <= warn_days:
            status = "expiring"
        elif due(cert, None, now):
            status = "due"
        else:
            status = "ok"
        window = dt.timedelta(days=pem.lifetime_days(cert) / 3)  # renewal's default window
        row = {"name": name, "kind": kind, "hosts": sorted(hosts_by_name.get(name, [])),
               "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
               "issuer_name": None, "serial": openssl_serial(cert.serial_number),
               "not_before": pem.iso(cert.not_valid_before_utc), "not_after": pem.iso(cert.not_valid_after_utc),
               "renew_from": pem.iso(cert.not_valid_after_utc - window),
               "days_left": round(left, 1), "status": status}
        if kind == "ca":
            ca_by_subject[row["subject"]] = name
        out.append(row)
    for row in out:
        if not (row["kind"] == "ca" and row["issuer"] == row["subject"]):  # a root has no issuer above it
            row["issuer_name"] = ca_by_subject.get(row["issuer"])
    return sorted(out, key=lambda r: (r["days_left"], r["name"]))


def table(report_rows):
    """A plain-text table, one line per certificate."""
    head = ("DAYS", "STATUS", "KIND", "NAME", "HOSTS", "NOT AFTER", "SERIAL")
    lines = [(f"{r['days_left']:.1f}", r["status"], r["kind"], r["name"], ",".join(r["hosts"]) or "-",
              r["not_after"], r["serial"]) for r in report_rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *lines]]


def to_json(report_rows, generated):
    return json.dumps({"generated": generated, "certificates": report_rows}, indent=1) + "\n"


_COLOURS = {"expired": "#b00020", "revoked": "#6a1b9a", "expiring": "#e65100", "due": "#f9a825", "ok": "#2e7d32"}
_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:80em}table{border-collapse:collapse}
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}td.num{text-align:right}
.tag{color:#fff;border-radius:3px;padding:.1em .5em;font-size:12px}code{font-size:12px}h2{margin-top:1.6em}
svg text{font:12px system-ui,sans-serif}ul.tree,ul.tree ul{list-style:none;padding-left:1.4em;margin:0}
ul.tree li{margin:.25em 0;position:relative}ul.tree ul li::before{content:"";position:absolute;left:-1em;top:.7em;
width:.7em;border-top:1px solid #999}ul.tree ul{border-left:1px solid #999;margin-left:.3em}
.hosts{color:#555}.ca{font-weight:600}.struck{text-decoration:line-through}"""


def _time(text):
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _tag(status):
    return f"<span class=tag style='background:{_COLOURS[status]}'>{status}</span>"


def _timeline(report_rows, now):
    """An inline SVG: one bar per certificate from not-before to not-after, its renewal window shaded, a line
    at now; expired and revoked bars are marked (and labelled)."""
    if not report_rows:
        return "<p>No certificates.</p>"
    start = min([_time(r["not_before"]) for r in report_rows] + [now])
    end = max([_time(r["not_after"]) for r in report_rows] + [now])
    span = max((end - start).total_seconds(), 1.0)
    label_w, plot_w, row_h, top = 190, 760, 22, 28
    width, height = label_w + plot_w + 90, top + row_h * len(report_rows) + 10

    def x(when):
        return label_w + plot_w * (when - start).total_seconds() / span

    out = [f"<svg width='{width}' height='{height}' role='img' "
           f"aria-label='certificate lifetimes'>",
           "<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
           "patternTransform='rotate(45)'><rect width='3' height='6' fill='#fff' opacity='.55'/></pattern></defs>"]
    for i in range(6):  # date ticks
        when = start + (end - start) * i / 5
        out.append(f"<line x1='{x(when):.1f}' y1='{top - 6}' x2='{x(when):.1f}' y2='{height - 8}' stroke='#eee'/>"
                   f"<text x='{x(when):.1f}' y='{top - 10}' text-anchor='middle' fill='#666'>"
                   f"{when:%Y-%m-%d}</text>")
    for i, r in enumerate(report_rows):
        y = top + i * row_h
        nb, na, renew = _time(r["not_before"]), _time(r["not_after"]), _time(r["renew_from"])
        colour = _COLOURS[r["status"]]
        name = html.escape(r["name"]) + (" (CA)" if r["kind"] == "ca" else "")
        struck = " text-decoration='line-through'" if r["status"] == "revoked" else ""
        out.append(f"<text x='{label_w - 8}' y='{y + 15}' text-anchor='end'{struck}>{name}</text>")
        out.append(f"<g class='bar {r['status']}'><title>{html.escape(r['name'])}: {r['not_before']} to "
                   f"{r['not_after']} ({r['status']}); renewal from {r['renew_from']}</title>"
                   f"<rect x='{x(nb):.1f}' y='{y + 4}' width='{max(x(na) - x(nb), 1):.1f}' height='14' rx='2' "
                   f"fill='{colour}' opacity='.85'/>"
                   f"<rect x='{x(max(renew, nb)):.1f}' y='{y + 4}' width='{max(x(na) - x(max(renew, nb)), 0):.1f}' "
                   f"height='14' fill='url(#hatch)'/>")
        if r["status"] in ("expired", "revoked"):
            out.append(f"<text x='{x(na) + 4:.1f}' y='{y + 15}' fill='{colour}' font-weight='bold'>"
                       f"{'✕ expired' if r['status'] == 'expired' else '⊘ revoked'}</text>")
        out.append("</g>")
    out.append(f"<line x1='{x(now):.1f}' y1='{top - 4}' x2='{x(now):.1f}' y2='{height - 4}' stroke='#000' "
               f"stroke-width='2' stroke-dasharray='4 3'/><text x='{x(now) + 4:.1f}' y='{height - 2}' "
               f"font-weight='bold'>now</text></svg>")
    return "".join(out)


def _tree(report_rows):
    """Nested lists: root -> intermediates -> leaves, each with its status and the hosts that hold it."""
    children = {}
    for r in report_rows:
        children.setdefault(r["issuer_name"], []).append(r)

    def item(r):
        hosts = f" <span class=hosts>on {html.escape(', '.join(r['hosts']))}</span>" if r["hosts"] else ""
        cls = "ca" if r["kind"] == "ca" else ""
        cls += " struck" if r["status"] == "revoked" else ""
        head = (f"<span class='{cls.strip()}'>{html.escape(r['name'])}</span> {_tag(r['status'])} "
                f"<code>{r['serial']}</code>{hosts}")
        below = children.get(r["name"], []) if r["kind"] == "ca" else []
        below = sorted(below, key=lambda c: (c["kind"] != "ca", c["name"]))
        inner = "<ul>" + "".join(item(c) for c in below) + "</ul>" if below else ""
        return f"<li>{head}{inner}</li>"

    roots = sorted(children.get(None, []), key=lambda r: (r["kind"] != "ca", r["name"]))
    return "<ul class=tree>" + "".join(item(r) for r in roots) + "</ul>" if roots else "<p>No certificates.</p>"


def to_html(report_rows, generated, warn_days, now=None):
    """A self-contained page (inline CSS and SVG, no scripts or external resources): summary, timeline, CA
    tree, table. ``now`` (the timeline's line) defaults to ``generated`` when that is an ISO time."""
    try:
        now = now or _time(generated)
    except ValueError:
        now = pem.utcnow()
    counts = {s: sum(r["status"] == s for r in report_rows) for s in STATUS_ORDER}
    cells = "".join(
        f"<tr><td class=num>{r['days_left']:.1f}</td><td>{_tag(r['status'])}</td><td>{r['kind']}</td>"
        f"<td>{html.escape(r['name'])}</td><td>{html.escape(', '.join(r['hosts']) or '-')}</td>"
        f"<td>{r['not_after']}</td><td><code>{r['serial']}</code></td><td>{html.escape(r['subject'])}</td></tr>"
        for r in report_rows)
    summary = " · ".join(f"{n} {s}" for s, n in counts.items() if n)
    legend = " ".join(_tag(s) for s in STATUS_ORDER)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mTLS certificate expiry</title>
<style>{_CSS}</style></head>
<body><h1>mTLS certificate expiry</h1>
<p>Generated {generated}; warning threshold {warn_days:g} days. {summary}</p>
<h2>Timeline</h2>
<p>One bar per certificate from not-before to not-after; the hatched end is the renewal window (the last third
of the lifetime); the dashed line is now. {legend}</p>
{_timeline(report_rows, now)}
<h2>CA tree</h2>
{_tree(report_rows)}
<h2>Certificates</h2>
<table><tr><th>Days left</th><th>Status</th><th>Kind</th><th>Name</th><th>Hosts</th><th>Not after</th>
<th>Serial</th><th>Subject</th></tr>{cells}</table></body></html>
"""
