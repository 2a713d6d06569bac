"""A CA rotation of the fleet (playbooks/rotate.yml): the plan drawn from the inventory, the variables each phase
runs the roles with, and the phase derived from what every host serves, accepts and trusts (pki.rotation).

Observed facts come from real handshakes: the control node's probes of every server (the chain served, verified
against the old root and the new root alone; an old- and a new-hierarchy client identity) and every client host's
own requests, plus the trust bundle and identity it holds. A fact that cannot be read is a problem that stops the
rotation, never a guess.
"""

from .pki import pem
from .pki.errors import PkiError
from .pki.rotation import PHASES, Client, Observed, Server, phase, violations
from .pki.verify import signed_by

# The client identity the control node presents to prove that a server accepts clients of an issuer.
PROBE_IDENTITY = "mtls-rotate-{issuer}"


class RotateError(ValueError):
    pass


def _unique(names):
    out = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def plan(cas, ca, to, server_issuer, client_issuer, new_server_issuer="", new_client_issuer="",
         nginx_client_issuers=None, pki_dir=""):
    """The rotation of CA ``ca`` to ``to`` (both in ``cas``, i.e. mtls_cas): roots, issuers before and after,
    the CA list the pki role runs with (the new root cross-signed by the old) and the settings of every phase."""
    if not isinstance(cas, list) or not all(isinstance(c, dict) and c.get("name") for c in cas):
        raise RotateError("mtls_cas must be a list of CAs, each with a name")
    byname = {c["name"]: c for c in cas}
    known = ", ".join(byname)
    for var, name in (("mtls_rotate_ca", ca), ("mtls_rotate_to", to)):
        if not name:
            raise RotateError(f"{var} is not set: name the CA of mtls_cas to {'replace' if var.endswith('ca') else 'replace it with'} "
                              f"(one of {known})")
        if name not in byname:
            raise RotateError(f"{var} {name!r} is not in mtls_cas (one of {known}); add the new CA to mtls_cas first")
    if ca == to:
        raise RotateError(f"mtls_rotate_to {to!r} is the CA being replaced: name its successor")

    def ancestry(name):
        seen = [name]
        while byname[seen[-1]].get("issuer"):
            parent = byname[seen[-1]]["issuer"]
            if parent not in byname or parent in seen:
                raise RotateError(f"the issuer {parent!r} of {seen[-1]!r} is not a CA above it in mtls_cas")
            seen.append(parent)
        return seen

    def under(name, top):
        return top in ancestry(name)

    is_root = not byname[ca].get("issuer")
    if is_root != (not byname[to].get("issuer")):
        raise RotateError(f"mtls_rotate_to {to!r} must be {'a root (no issuer)' if is_root else 'an intermediate'} "
                          f"like {ca!r}, the CA it replaces")
    if under(to, ca):
        raise RotateError(f"mtls_rotate_to {to!r} is issued under {ca!r}, the CA being replaced")
    old_root, new_root = ancestry(ca)[-1], ancestry(to)[-1]

    def successor(kind, old, given):
        if old not in byname:
            raise RotateError(f"mtls_{kind}_issuer {old!r} is not in mtls_cas (one of {known})")
        if not under(old, ca):  # not affected by the rotation, unless named on purpose
            new = given or old
        elif given:
            new = given
        elif old == ca:
            new = to
        else:
            raise RotateError(f"mtls_rotate_{kind}_issuer is not set: mtls_{kind}_issuer {old!r} is under {ca!r}, "
                              f"which is being replaced; name the CA under {to!r} that issues {kind} certificates "
                              f"after the rotation")
        if new not in byname:
            raise RotateError(f"mtls_rotate_{kind}_issuer {new!r} is not in mtls_cas (one of {known})")
        if new != old and not under(new, to):
            raise RotateError(f"mtls_rotate_{kind}_issuer {new!r} is not under {to!r}, the new CA")
        return new

    new_server = successor("server", server_issuer, new_server_issuer)
    new_client = successor("client", client_issuer, new_client_issuer)
    cross = f"{pki_dir.rstrip('/')}/ca/{new_root}/cross-{old_root}.pem" if is_root else None
    out_cas = [dict(c, cross_signed_by=_unique(list(c.get("cross_signed_by") or []) + [old_root]))
               if is_root and c["name"] == new_root else c for c in cas]
    issuers = list(nginx_client_issuers or [client_issuer])
    old_trust = _unique([old_root])
    both = {"nginx_client_issuers": _unique(issuers + [new_client]), "trusted_roots": _unique([old_root, new_root])}
    after = {"nginx_client_issuers": _unique([new_client if i == client_issuer else i for i in issuers]),
             "trusted_roots": [new_root]}
    old_leaves = {"server_issuer": server_issuer, "client_issuer": client_issuer}
    new_leaves = {"server_issuer": new_server, "client_issuer": new_client}
    settings = {
        "introduce": dict(old_leaves, nginx_client_issuers=issuers, trusted_roots=old_trust, chain_extra=[]),
        "trust_both": dict(old_leaves, chain_extra=[], **both),
        "reissue": dict(new_leaves, chain_extra=[cross] if cross else [], **both),
        "withdraw": dict(new_leaves, chain_extra=[], **after),
    }
    settings["done"] = settings["withdraw"]
    new_cas = _unique([to, new_server, new_client])
    identities = [{"kind": "old_id", "name": PROBE_IDENTITY.format(issuer=client_issuer), "issuer": client_issuer},
                  {"kind": "new_id", "name": PROBE_IDENTITY.format(issuer=new_client), "issuer": new_client}]
    return {"ca": ca, "to": to, "root": is_root, "old_root": old_root, "new_root": new_root,
            "old_server_issuer": server_issuer, "new_server_issuer": new_server,
            "old_client_issuer": client_issuer, "new_client_issuer": new_client,
            "server_affected": new_server != server_issuer, "client_affected": new_client != client_issuer,
            "new_cas": new_cas, "cross": cross, "cas": out_cas, "pki_dir": pki_dir.rstrip("/"),
            "identities": identities if new_client != client_issuer else [], "settings": settings}


def _store_cert(pki_dir, name):
    try:
        with open(f"{pki_dir}/ca/{name}/cert.pem", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return pem.load_cert(data, f"{pki_dir}/ca/{name}/cert.pem")


def _pems(text, what):
    try:
        return pem.load_certs((text or "").encode(), what)
    except PkiError:
        return []


def _status(result):
    if not result:
        return None
    return result.get("http_status") if "http_status" in result else result.get("status")


def _why_failed(result):
    if not result:
        return "no answer"
    return result.get("error") or result.get("msg") or f"HTTP {_status(result)}"


def derive(p, probes, clients, round_name="", servers=None):
    """The next phase from the control node's ``probes`` (registered loop results, item = [server, kind]) of every
    host in ``servers`` and
    ``clients`` ({host: {round, pem (its ca.pem, cert.pem, system bundle), requests: [uri results, item = server]}}).

    Returns {phase, why, violations, problems, servers, clients}: ``problems`` are facts that could not be
    proven (a host that did not answer, a failed request from a client host, a served chain a client cannot
    verify); the playbook stops on any of them or on a violation."""
    d = p["pki_dir"]
    problems = []
    certs = {n: _store_cert(d, n) for n in _unique([p["old_root"], p["new_root"], p["old_server_issuer"],
                                                   p["new_server_issuer"], p["old_client_issuer"],
                                                   p["new_client_issuer"]])}
    new_ca = all(certs.get(n) is not None for n in p["new_cas"])
    cross = not p["root"] or bool(p["cross"]) and _exists(p["cross"])
    dn = {n: c.subject.rfc4514_string() for n, c in certs.items() if c is not None}
    for kind in ("server", "client"):
        old, new = p[f"old_{kind}_issuer"], p[f"new_{kind}_issuer"]
        if old != new and old in dn and new in dn and dn[old] == dn[new]:
            problems.append(f"{old!r} and {new!r} have the same subject ({dn[old]}): give the new CA a subject of "
                            f"its own, so that leaves of the two hierarchies can be told apart")

    by_server = {}
    for r in probes or []:
        item = r.get("item") or [None, None]
        if r.get("skipped"):
            continue
        by_server.setdefault(item[0], {})[item[1]] = r
    for host in sorted(set(servers or ()) - set(by_server)):
        problems.append(f"{host}: not probed in this round (unreachable, or it failed earlier in the run)")
    servers, seen = {}, {}
    for host, res in sorted(by_server.items()):
        base = res.get("old_root") or {}
        if not base.get("reachable", False) or base.get("error") or not base.get("certificates"):
            problems.append(f"{host}: no TLS handshake from the control node ({_why_failed(base)})")
            continue
        leaf = base["certificates"][0]
        serves_new = True
        if p["server_affected"]:
            serves_new = leaf.get("issuer") == dn.get(p["new_server_issuer"])
        if p["root"]:
            serves_new = serves_new and bool((res.get("new_root") or {}).get("verified"))

        def accepts(kind, name):
            r = res.get(kind)
            if r is not None:
                return _status(r) == 200
            return dn.get(name) in (base.get("acceptable_ca_names") or [])  # check mode: no identity issued yet

        if p["client_affected"]:
            s = Server(accepts_old=accepts("old_id", p["old_client_issuer"]),
                       accepts_new=accepts("new_id", p["new_client_issuer"]), serves_new=serves_new)
        else:
            s = Server(accepts_old=False, accepts_new=True, serves_new=serves_new)
        servers[host] = s
        seen[host] = {"serves_new": s.serves_new, "accepts_old": s.accepts_old, "accepts_new": s.accepts_new,
                      "verifies_old_root": base.get("verified"),
                      "verifies_new_root": (res.get("new_root") or base).get("verified")}

    old_root, new_root = certs.get(p["old_root"]), certs.get(p["new_root"])
    new_client = certs.get(p["new_client_issuer"])
    cls, client_seen = {}, {}
    for host, c in sorted((clients or {}).items()):
        if not isinstance(c, dict) or c.get("round") != round_name:
            problems.append(f"{host}: the client host did not report what it trusts and holds")
            continue
        found = _pems(c.get("pem"), f"{host}: ca.pem, cert.pem and its system bundle")
        bundle = [x for x in found if pem.is_ca(x)]  # ca.pem and the system trust store: the roots it trusts
        leaf = [x for x in found if not pem.is_ca(x)]  # cert.pem: its identity
        if not bundle or not leaf:
            problems.append(f"{host}: no readable ca.pem or cert.pem in its client directory")
            continue
        ders = {pem.to_pem(x) for x in bundle}
        if p["root"]:
            trusts_old = old_root is not None and pem.to_pem(old_root) in ders
            trusts_new = new_root is not None and pem.to_pem(new_root) in ders
        else:
            trusts_old, trusts_new = False, True
        holds_new = not p["client_affected"] or (new_client is not None and signed_by(leaf[0], new_client))
        cls[host] = Client(trusts_old=trusts_old, trusts_new=trusts_new, holds_new=holds_new)
        client_seen[host] = {"trusts_old": trusts_old, "trusts_new": trusts_new, "holds_new": holds_new}
        for req in c.get("requests") or []:  # ansible.builtin.uri results, item = the server
            if req.get("status") != 200:
                problems.append(f"{host} -> {req.get('item')}: the request with its identity and trust store "
                                f"failed ({req.get('msg') or 'HTTP ' + str(req.get('status'))})")

    old_only = [h for h, c in cls.items() if c.trusts_old and not c.trusts_new]
    new_only = [h for h, c in cls.items() if c.trusts_new and not c.trusts_old]
    for host, s in seen.items():
        if p["root"] and old_only and not s["verifies_old_root"]:
            problems.append(f"{host}: its chain does not verify against {p['old_root']!r} alone, which "
                            f"{', '.join(old_only)} still trust(s) alone")
        if p["root"] and new_only and not s["verifies_new_root"]:
            problems.append(f"{host}: its chain does not verify against {p['new_root']!r} alone, which "
                            f"{', '.join(new_only)} trust(s) alone")

    obs = Observed(new_ca=new_ca, cross=cross, servers=servers, clients=cls)
    name, why = phase(obs)
    return {"phase": name, "why": why, "violations": violations(obs) if new_ca else [], "problems": problems,
            "servers": seen, "clients": client_seen, "round": round_name}


def _exists(path):
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def regressed(result, ran):
    """A sentence when the phase ``ran`` just ran and the fleet is not past it (its goal was not proven)."""
    if not ran or ran not in PHASES:
        return ""
    if PHASES.index(result["phase"]) <= PHASES.index(ran):
        return (f"phase {ran} ran but is not proven on every host: " + "; ".join(result["why"] or ["no reason"]))
    return ""
