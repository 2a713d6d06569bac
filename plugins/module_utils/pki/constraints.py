"""Name-constraint checks, so a leaf the chain would reject is refused before it is issued."""

from ..cryptography_dep import record_missing

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()


def _dns_within(name, base):
    name = name[2:] if name.startswith("*.") else name
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def violations(cert, dns, ips):
    """The names in ``dns``/``ips`` that the name constraints of ``cert`` (a CA) do not permit."""
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    bad = []
    permitted, excluded = nc.permitted_subtrees or [], nc.excluded_subtrees or []
    p_dns = [t.value for t in permitted if isinstance(t, x509.DNSName)]
    e_dns = [t.value for t in excluded if isinstance(t, x509.DNSName)]
    p_ip = [t.value for t in permitted if isinstance(t, x509.IPAddress)]
    e_ip = [t.value for t in excluded if isinstance(t, x509.IPAddress)]
    for name in dns:
        if any(_dns_within(name, b) for b in e_dns) or (p_dns and not any(_dns_within(name, b) for b in p_dns)):
            bad.append(name)
    for ip in ips:
        if any(ip in n for n in e_ip if n.version == ip.version) or (
                p_ip and not any(ip in n for n in p_ip if n.version == ip.version)):
            bad.append(str(ip))
    return bad
