"""verify.py: a certificate checked for a purpose as a TLS peer would, with every problem explained."""

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from ansible_collections.mtls.rollout.plugins.module_utils.pki.verify import verify
from pkitest import DAY, ca_cert, issue, leaf_cert, make_ca, read_key

LEAVES = [
    {"name": "web", "common_name": "web.example.com", "dns": ["*.apps.example.com"],
     "ip": ["10.0.0.5", "2001:db8::5"]},
    {"name": "alice", "profile": "client", "common_name": "alice"},
    {"name": "svc", "profile": "both", "common_name": "svc.example.com"},
    {"name": "wild", "dns": ["*.wild.example.com"]},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """root -> int -> leaves; root -> int1 -> int2 -> deep; a leaf right under root; a foreign root."""
    store = Store(str(tmp_path_factory.mktemp("verify") / "pki"))
    make_ca(store, "root")
    make_ca(store, "int", "root")
    make_ca(store, "int1", "root")
    make_ca(store, "int2", "int1")
    issue(store, "int", LEAVES)
    issue(store, "int2", [{"name": "deep", "common_name": "deep.example.com"}])
    issue(store, "root", [{"name": "direct", "common_name": "direct.example.com"}])
    foreign = Store(str(tmp_path_factory.mktemp("foreign") / "pki"))
    make_ca(foreign, "root")  # same name and subject as ours, another key
    make_ca(foreign, "other-root")
    return store, foreign


def codes(result):
    return [p["code"] for p in result["problems"]]


def check(world, name, purpose, **kw):
    store = world[0]
    return verify(leaf_cert(store, name), purpose, [ca_cert(store, "root")], [ca_cert(store, "int")], **kw)


@pytest.mark.parametrize("kw", [{}, {"hostname": "web.example.com"}, {"hostname": "WEB.example.com."},
                                {"hostname": "x.apps.example.com"}, {"ip": "10.0.0.5"}, {"ip": "2001:db8::5"},
                                {"hostname": "web.example.com", "ip": "10.0.0.5"}])
def test_valid_server(world, kw):
    result = check(world, "web", "server", **kw)
    assert result["valid"] and result["problems"] == [], result["problems"]
    assert result["chain"] == ["CN=web.example.com", "CN=int", "CN=root"] and result["depth"] == 1
    assert result["method"] == "cryptography.x509.verification"
    assert result["days_remaining"] == pytest.approx(365, abs=0.1)


def test_valid_client_and_both(world):
    assert check(world, "alice", "client")["valid"]
    assert check(world, "svc", "server", hostname="svc.example.com")["valid"]
    assert check(world, "svc", "client")["valid"]


def test_wildcard_only_certificate_without_hostname(world):
    result = check(world, "wild", "server")
    assert result["valid"], result["problems"]
    assert check(world, "wild", "server", hostname="a.wild.example.com")["valid"]


@pytest.mark.parametrize("hostname", ["other.example.com", "apps.example.com", "a.b.apps.example.com",
                                      "example.com", "web.example.com.evil.net"])
def test_name_mismatch(world, hostname):
    result = check(world, "web", "server", hostname=hostname)
    assert not result["valid"] and codes(result) == ["name_mismatch"]
    assert hostname in result["problems"][0]["message"] and "web.example.com" in result["problems"][0]["message"]


@pytest.mark.parametrize("ip", ["10.0.0.6", "2001:db8::6", "127.0.0.1"])
def test_ip_not_in_san(world, ip):
    result = check(world, "web", "server", ip=ip)
    assert not result["valid"] and codes(result) == ["ip_mismatch"]
    assert ip in result["problems"][0]["message"]


def test_wrong_purpose(world):
    result = check(world, "web", "client")
    assert codes(result) == ["wrong_purpose"] and "serverAuth" in result["problems"][0]["message"]
    result = check(world, "alice", "server")
    assert "wrong_purpose" in codes(result) and not result["valid"]
    assert "clientAuth" in result["problems"][0]["message"]


def test_expired_and_not_yet_valid(world):
    store = world[0]
    cert = leaf_cert(store, "web")
    result = check(world, "web", "server", now=cert.not_valid_after_utc + DAY)
    assert codes(result) == ["expired"] and result["days_remaining"] < 0
    assert "expired on" in result["problems"][0]["message"]
    result = check(world, "web", "server", now=cert.not_valid_before_utc - DAY)
    assert codes(result) == ["not_yet_valid"]
    assert check(world, "web", "server", now=cert.not_valid_after_utc - DAY)["valid"]


def test_min_days(world):
    store = world[0]
    end = leaf_cert(store, "web").not_valid_after_utc
    result = check(world, "web", "server", min_days=30, now=end - 10 * DAY)
    assert codes(result) == ["expires_soon"] and "10.0 days" in result["problems"][0]["message"]
    assert check(world, "web", "server", min_days=30, now=end - 40 * DAY)["valid"]


def test_key_pair_match(world):
    store = world[0]
    assert check(world, "web", "server", key=read_key(store.leaf_path("web", "key.pem")))["valid"]
    result = check(world, "web", "server", key=read_key(store.leaf_path("alice", "key.pem")))
    assert codes(result) == ["key_mismatch"]
    assert codes(check(world, "web", "server", key=keys.generate(keys.key_spec("ed25519")))) == ["key_mismatch"]


def test_missing_intermediate_is_untrusted(world):
    store = world[0]
    result = verify(leaf_cert(store, "web"), "server", [ca_cert(store, "root")], [])
    assert codes(result) == ["untrusted"] and "CN=int" in result["problems"][0]["message"]
    # three levels, the lower intermediate missing
    result = verify(leaf_cert(store, "deep"), "server", [ca_cert(store, "root")], [ca_cert(store, "int1")])
    assert codes(result) == ["untrusted"] and "CN=int2" in result["problems"][0]["message"]


def test_foreign_ca_is_untrusted(world):
    store, foreign = world
    inter = [ca_cert(store, "int")]
    result = verify(leaf_cert(store, "web"), "server", [ca_cert(foreign, "other-root")], inter)
    assert codes(result) == ["untrusted"]
    # a foreign root with the very same name (e.g. another environment's 'root') is no anchor either
    result = verify(leaf_cert(store, "web"), "server", [ca_cert(foreign, "root")], inter)
    assert codes(result) == ["untrusted"] and "same name" in result["problems"][0]["message"]


@pytest.mark.parametrize("hostname", ["a..b", "*.apps.example.com", "bad_name.example.com"])
def test_invalid_hostname_to_check_is_refused(world, hostname):
    with pytest.raises(PkiError) as info:
        check(world, "web", "server", hostname=hostname)
    assert repr(hostname) in str(info.value)


def test_no_anchor(world):
    store = world[0]
    result = verify(leaf_cert(store, "web"), "server", [], [ca_cert(store, "int")])
    assert codes(result) == ["no_trust_anchor"]


def test_ca_certificate_is_not_an_end_entity(world):
    store = world[0]
    result = verify(ca_cert(store, "int"), "server", [ca_cert(store, "root")])
    assert "is_ca" in codes(result) and not result["valid"]


@pytest.mark.parametrize("name, inter, depth", [("direct", [], 0), ("web", ["int"], 1), ("deep", ["int2", "int1"], 2)])
def test_depth_is_the_number_of_intermediates(world, name, inter, depth):
    store = world[0]
    result = verify(leaf_cert(store, name), "server", [ca_cert(store, "root")], [ca_cert(store, n) for n in inter])
    assert result["valid"] and result["depth"] == depth and len(result["chain"]) == depth + 2


def test_intermediates_in_any_order_and_extra_ones(world):
    store = world[0]
    pool = [ca_cert(store, n) for n in ("int1", "int", "int2")]
    result = verify(leaf_cert(store, "deep"), "server", [ca_cert(store, "root")], pool)
    assert result["valid"] and result["chain"] == ["CN=deep.example.com", "CN=int2", "CN=int1", "CN=root"]


def test_result_reports_certificate_facts(world):
    store = world[0]
    cert = leaf_cert(store, "web")
    result = check(world, "web", "server")
    assert result["serial"] == format(cert.serial_number, "x")
    assert result["subject"] == "CN=web.example.com"
    assert result["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Ed25519: outside cryptography's web-PKI policy, checked link by link ---------------------------

@pytest.fixture(scope="module")
def ed(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("ed25519") / "pki"))
    make_ca(store, "root", key_type="ed25519")
    make_ca(store, "int", "root", key_type="ed25519")
    issue(store, "int", [{"name": "web", "common_name": "web.example.com", "key_type": "ed25519"},
                         {"name": "alice", "profile": "client", "common_name": "alice", "key_type": "ed25519"}])
    foreign = Store(str(tmp_path_factory.mktemp("ed-foreign") / "pki"))
    make_ca(foreign, "root", key_type="ed25519")
    return store, foreign


def test_ed25519_chain_verified_link_by_link(ed):
    store = ed[0]
    result = verify(leaf_cert(store, "web"), "server", [ca_cert(store, "root")], [ca_cert(store, "int")],
                    hostname="web.example.com", key=read_key(store.leaf_path("web", "key.pem")))
    assert result["valid"], result["problems"]
    assert result["method"].startswith("link-by-link")
    assert result["chain"] == ["CN=web.example.com", "CN=int", "CN=root"] and result["depth"] == 1
    assert verify(leaf_cert(store, "alice"), "client", [ca_cert(store, "root")], [ca_cert(store, "int")])["valid"]


def test_ed25519_problems(ed):
    store, foreign = ed
    root, inter = ca_cert(store, "root"), ca_cert(store, "int")
    assert codes(verify(leaf_cert(store, "web"), "server", [root], [])) == ["untrusted"]
    assert codes(verify(leaf_cert(store, "web"), "server", [ca_cert(foreign, "root")], [inter])) == ["bad_signature"]
    assert codes(verify(leaf_cert(store, "web"), "client", [root], [inter])) == ["wrong_purpose"]
    assert codes(verify(leaf_cert(store, "web"), "server", [root], [inter], hostname="x.example.com")) == [
        "name_mismatch"]
    later = inter.not_valid_after_utc + DAY
    assert "expired" in codes(verify(leaf_cert(store, "web"), "server", [root], [inter], now=later))
