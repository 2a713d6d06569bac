"""The rotation of rotate.yml (plugins/module_utils/rotate.py): the plan drawn from mtls_cas (bad names refused with
the valid ones), the settings of each phase, and the phase derived from what the probes and client hosts report
(a real store's certificates; probe results and client reports shaped as the playbook registers them)."""

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils import rotate
from ansible_collections.mtls.rollout.plugins.module_utils.pki import pem
from ansible_collections.mtls.rollout.plugins.module_utils.pki.cross import ensure_cross
from pkitest import issue, make_ca

CAS = [{"name": "root"}, {"name": "server-ca", "issuer": "root"}, {"name": "client-ca", "issuer": "root"},
       {"name": "root2"}, {"name": "server-ca-2", "issuer": "root2"}, {"name": "client-ca-2", "issuer": "root2"}]


def root_plan(pki_dir=""):
    return rotate.plan(CAS, "root", "root2", "server-ca", "client-ca", "server-ca-2", "client-ca-2", None, pki_dir)


def test_a_root_rotation_plan_and_its_phases():
    p = root_plan("/srv/pki/")
    assert (p["old_root"], p["new_root"], p["new_server_issuer"], p["new_client_issuer"]) == \
        ("root", "root2", "server-ca-2", "client-ca-2")
    assert p["cross"] == "/srv/pki/ca/root2/cross-root.pem"
    assert [c.get("cross_signed_by") for c in p["cas"]] == [None, None, None, ["root"], None, None]
    s = p["settings"]
    assert s["trust_both"] == {"server_issuer": "server-ca", "client_issuer": "client-ca", "chain_extra": [],
                               "nginx_client_issuers": ["client-ca", "client-ca-2"], "trusted_roots": ["root", "root2"]}
    assert s["reissue"] == {"server_issuer": "server-ca-2", "client_issuer": "client-ca-2",
                            "chain_extra": ["/srv/pki/ca/root2/cross-root.pem"],
                            "nginx_client_issuers": ["client-ca", "client-ca-2"], "trusted_roots": ["root", "root2"]}
    assert s["withdraw"] == s["done"] == {"server_issuer": "server-ca-2", "client_issuer": "client-ca-2",
                                          "chain_extra": [], "nginx_client_issuers": ["client-ca-2"],
                                          "trusted_roots": ["root2"]}


def test_an_intermediate_rotation_keeps_the_root_and_the_other_side():
    cas = CAS[:3] + [{"name": "client-ca-2", "issuer": "root"}]
    p = rotate.plan(cas, "client-ca", "client-ca-2", "server-ca", "client-ca")
    assert (p["root"], p["cross"], p["new_client_issuer"], p["new_server_issuer"]) == \
        (False, None, "client-ca-2", "server-ca")
    assert not p["server_affected"] and p["client_affected"]
    assert p["settings"]["withdraw"]["trusted_roots"] == ["root"]
    assert p["settings"]["withdraw"]["nginx_client_issuers"] == ["client-ca-2"]


@pytest.mark.parametrize("args, message", [
    (("", "root2", "server-ca", "client-ca"), "mtls_rotate_ca is not set"),
    (("nope", "root2", "server-ca", "client-ca"), "mtls_rotate_ca 'nope' is not in mtls_cas (one of root, server-ca"),
    (("root", "root", "server-ca", "client-ca"), "is the CA being replaced"),
    (("root", "server-ca-2", "server-ca", "client-ca"), "mtls_rotate_to 'server-ca-2' must be a root"),
    (("root", "root2", "server-ca", "client-ca"), "mtls_rotate_server_issuer is not set: mtls_server_issuer "
                                                  "'server-ca' is under 'root'"),
    (("root", "root2", "server-ca", "client-ca", "client-ca", "client-ca-2"), "mtls_rotate_server_issuer "
                                                                              "'client-ca' is not under 'root2'"),
    (("root", "root2", "nope", "client-ca"), "mtls_server_issuer 'nope' is not in mtls_cas"),
])
def test_bad_names_are_refused_naming_what_would_be_valid(args, message):
    with pytest.raises(rotate.RotateError) as e:
        rotate.plan(CAS, *args)
    assert message in str(e.value)


@pytest.fixture
def fleet_store(store):
    """Both hierarchies, the cross-certificate, a server leaf and a client leaf in each."""
    for c in CAS:
        make_ca(store, c["name"], c.get("issuer"), subject={"common_name": c["name"]})
    ensure_cross(store, "root2", "root")
    for n in ("", "-2"):
        issue(store, f"server-ca{n}", [{"name": f"web{n}", "dns": ["web"]}])
        issue(store, f"client-ca{n}", [{"name": f"cli{n}", "profile": "client", "common_name": "cli"}])
    return store


def text(store, *paths):
    return "".join(open(f"{store.root}/{p}").read() for p in paths)


def server(store, new_leaf, accepts_old, accepts_new, verify_old=True, verify_new=None):
    issuer = "server-ca-2" if new_leaf else "server-ca"
    leaf = {"issuer": pem.load_cert(text(store, f"ca/{issuer}/cert.pem").encode(), "x").subject.rfc4514_string()}
    new = new_leaf if verify_new is None else verify_new
    return [{"item": ["web1", "old_root"], "reachable": True, "error": None, "certificates": [leaf],
             "verified": verify_old, "acceptable_ca_names": []},
            {"item": ["web1", "new_root"], "reachable": True, "certificates": [leaf], "verified": new},
            {"item": ["web1", "old_id"], "http_status": 200 if accepts_old else 400},
            {"item": ["web1", "new_id"], "http_status": 200 if accepts_new else 400}]


def client(store, roots, leaf, round_name="r", status=200):
    return {"cli1": {"round": round_name, "pem": text(store, *[f"ca/{r}/cert.pem" for r in roots],
                                                      f"certs/{leaf}/cert.pem"),
                     "requests": [{"item": "web1", "status": status, "msg": "OK"}]}}


def test_the_phase_follows_what_the_fleet_serves_accepts_and_trusts(fleet_store):
    p, s = root_plan(fleet_store.root), fleet_store
    steps = [  # (server: new leaf, accepts old, accepts new), (client: roots, identity) -> phase
        ((False, True, False), (["root"], "cli"), "trust_both"),
        ((False, True, True), (["root", "root2"], "cli"), "reissue"),
        ((True, True, True), (["root", "root2"], "cli-2"), "withdraw"),
        ((True, False, True), (["root2"], "cli-2"), "done"),
    ]
    for (new_leaf, old_ok, new_ok), (roots, leaf), expected in steps:
        result = rotate.derive(p, server(s, new_leaf, old_ok, new_ok), client(s, roots, leaf), "r")
        assert (result["phase"], result["problems"], result["violations"]) == (expected, [], []), result


def test_introduce_until_the_new_cas_and_the_cross_exist(store):
    make_ca(store, "root")
    p = root_plan(store.root)
    assert rotate.derive(p, [], {}, "r")["why"] == ["the new CA does not exist yet"]


def test_what_cannot_be_proven_is_a_problem(fleet_store):
    p, s = root_plan(fleet_store.root), fleet_store
    stale = rotate.derive(p, server(s, False, True, False), client(s, ["root"], "cli", round_name="old"), "r")
    assert stale["problems"] == ["cli1: the client host did not report what it trusts and holds"]
    failed = rotate.derive(p, server(s, False, True, False), client(s, ["root"], "cli", status=-1), "r")
    assert failed["problems"] == ["cli1 -> web1: the request with its identity and trust store failed (OK)"]
    # a new leaf served without the cross-certificate, while cli1 trusts only the old root
    no_cross = rotate.derive(p, server(s, True, True, True, verify_old=False), client(s, ["root"], "cli"), "r")
    assert no_cross["problems"] == ["web1: its chain does not verify against 'root' alone, which cli1 still trust(s) alone"]
    down = rotate.derive(p, [{"item": ["web1", "old_root"], "reachable": False, "error": "connection refused"}],
                         client(s, ["root"], "cli"), "r")
    assert down["problems"] == ["web1: no TLS handshake from the control node (connection refused)"]


def test_a_phase_that_ran_without_taking_hold_is_named(fleet_store):
    p, s = root_plan(fleet_store.root), fleet_store
    result = rotate.derive(p, server(s, False, True, False), client(s, ["root"], "cli"), "r")
    assert rotate.regressed(result, "trust_both") == (
        "phase trust_both ran but is not proven on every host: web1 does not accept client identities of the new "
        "hierarchy; cli1 does not trust the new root")
    assert rotate.regressed(result, "introduce") == "" and rotate.regressed(result, "") == ""


def test_a_server_without_probe_results_is_a_problem(fleet_store):
    p, s = root_plan(fleet_store.root), fleet_store
    result = rotate.derive(p, server(s, False, True, False), client(s, ["root"], "cli"), "r", ["web1", "web2"])
    assert result["problems"] == ["web2: not probed in this round (unreachable, or it failed earlier in the run)"]
