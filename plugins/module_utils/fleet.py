"""Inventory to certificate specs, and the PKI facts nginx templates need (no Ansible imports)."""

import ipaddress
import re

_CERT = re.compile(r"-----BEGIN CERTIFICATE-----")
_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


def is_ip(value):
    try:
        ipaddress.ip_address(str(value))
        return True
    except ValueError:
        return False


def server_name(host, hostvars):
    """Store name of a server host's certificate (distinct from its client certificate's)."""
    return hostvars[host].get("mtls_server_certificate_name") or f"{host}-server"


def with_host_key(cert, hv, report_var):
    """The certificate item for a host whose key stays on it (mtls_key_location host): its CSR and the
    certificate it holds, from what the role's host_key task registered as ``report_var``. None when that host
    made no report (it failed or was unreachable earlier in the run): it gets nothing this run."""
    if (hv.get("mtls_key_location") or "controller") != "host":
        return cert
    report = hv.get(report_var)
    if not isinstance(report, dict) or report.get("failed") or report.get("skipped") or "csr" not in report:
        return None
    return dict(cert, key_location="host", csr=report.get("csr"), held_certificate=report.get("certificate") or "",
                rotating=bool(report.get("rotating")))


def server_certificates(hosts, hostvars):
    """One server certificate per host: SAN from mtls_server_names plus the host's IP addresses."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        wanted = list(hv.get("mtls_server_names") or [host])
        ips = [str(i) for i in hv.get("mtls_server_ips") or []]
        if is_ip(hv.get("ansible_host", "")):
            ips.insert(0, str(hv["ansible_host"]))
        ips += [n for n in wanted if is_ip(n)]
        dns = [n for n in wanted if not is_ip(n)]
        ips = list(dict.fromkeys(ips))
        cert = {"name": server_name(host, hostvars), "profile": "server", "dns": dns, "ip": ips,
                "common_name": (dns or ips)[0] if (dns or ips) else None}
        cert.update(hv.get("mtls_server_certificate") or {})
        cert = with_host_key(cert, hv, "_mtls_server_key")
        if cert is not None:
            out.append(cert)
    return out


def client_certificates(hosts, hostvars, identities=()):
    """One client certificate per client host (named after it), plus identities not tied to a host."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        cert = {"name": host, "profile": "client", "common_name": hv.get("mtls_client_common_name") or host}
        password = hv.get("mtls_client_pkcs12_password")
        if password:
            cert["pkcs12"] = {"password": password, "encryption": hv.get("mtls_client_pkcs12_encryption") or "modern"}
            if hv.get("mtls_client_pkcs12_friendly_name"):  # the name browsers and keychains show
                cert["pkcs12"]["friendly_name"] = hv["mtls_client_pkcs12_friendly_name"]
        cert.update(hv.get("mtls_client_certificate") or {})
        cert = with_host_key(cert, hv, "_mtls_client_key")
        if cert is not None:
            out.append(cert)
    for identity in identities or ():
        out.append({"profile": "client", "common_name": identity.get("name"), **identity})
    return out


def verify_depth(bundles):
    """ssl_verify_depth for clients under the given issuing CAs' fullchain PEMs: the number of
    intermediates above the deepest client (at least 1, nginx's default)."""
    if isinstance(bundles, str):
        bundles = [bundles]
    return max([1] + [len(_CERT.findall(b)) - 1 for b in bundles])


def pem_bundle(texts):
    """One PEM bundle of every distinct certificate in ``texts`` (a CA file for nginx), in order."""
    if isinstance(texts, str):
        texts = [texts]
    blocks = dict.fromkeys(b for t in texts for b in _BLOCK.findall(t))
    return "".join(b + "\n" for b in blocks)


def certificate_hosts(servers, clients, hostvars):
    """Certificate name -> the hosts that hold it (servers' and clients' own certificates)."""
    out = {}
    for host in servers:
        out.setdefault(server_name(host, hostvars), []).append(host)
    for host in clients:
        out.setdefault(host, []).append(host)
    return out
