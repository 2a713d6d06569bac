"""The seam with OpenBao behind it: ensure_leaves signing through OpenBaoBackend (a real dev server), the store
only a cache. Batches over a bounded pool, a refused item mid-batch, unsupported leaf specs, revocations from an
empty cache that the cached CRL check then agrees with.
"""

import os
import shutil

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import crl, csr, keys, specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.choice import backend as choose
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao import _csr
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from tests.integration.test_openbao import DOCS, approle
from tests.openbao_server import DevServer

CAS = [specs.ca_spec("root", {"common_name": "Bao Root"}), specs.ca_spec("clients", {"common_name": "Bao Clients"},
                                                                         issuer="root", path_length=0)]


@pytest.fixture(scope="module")
def bao():
    with DevServer() as server:
        yield server


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "pki"))


def backend(bao, store):
    return choose(store, "openbao", {"addr": bao.addr, "token": bao.token, "mount_prefix": "seam-"})


@pytest.fixture(scope="module")
def hierarchy(bao, tmp_path_factory):
    b = backend(bao, Store(str(tmp_path_factory.mktemp("ca") / "pki")))
    return [b.ensure_ca(s) for s in CAS]


def issued_count(b, mount="seam-clients"):
    return len(b.client.list(f"{mount}/certs"))


def test_ca_hierarchy_is_made_once_and_cached_without_keys(bao, hierarchy, store):
    assert [r["action"] for r in hierarchy] == ["issued", "issued"]
    b = backend(bao, store)  # an empty cache: nothing changes in OpenBao, the cache is filled
    again = [b.ensure_ca(s) for s in CAS]
    assert [r["action"] for r in again] == ["unchanged", "unchanged"]
    assert (store.read(store.ca_path("clients", "chain.pem")) == store.read(store.ca_path("root", "cert.pem")))
    assert store.read(store.ca_path("clients", "key.pem")) is None


def test_a_batch_is_signed_over_the_pool_and_a_second_run_signs_nothing(bao, hierarchy, store):
    b = backend(bao, store)
    leaves = [specs.leaf_spec({"name": f"c{i}", "profile": "client", "common_name": f"c{i}"}) for i in range(40)]
    before = issued_count(b)
    results = ensure_leaves(store, "clients", leaves, backend=b)
    assert {r["action"] for r in results} == {"issued"}
    assert issued_count(b) == before + 40
    assert b.client.connections_opened <= b.client.pool_size
    results = ensure_leaves(store, "clients", leaves, backend=b)
    assert {r["action"] for r in results} == {"unchanged"} and issued_count(b) == before + 40


def test_a_refused_name_fails_that_item_and_keeps_the_others(bao, hierarchy, store):
    b = backend(bao, store)
    b.ca.ensure_roles("seam-clients", {"server": {"allowed_domains": ["example.com"]}})
    try:
        leaves = [specs.leaf_spec({"name": "good", "dns": ["a.example.com"]}),
                  specs.leaf_spec({"name": "bad", "dns": ["a.example.org"]})]
        with pytest.raises(PkiError, match=r"1 of 2 certificate\(s\) not issued: bad: .*refused.*a\.example\.org"):
            ensure_leaves(store, "clients", leaves, backend=b)
        kept = store.read(store.leaf_path("good", "cert.pem"))
        assert kept is not None and store.read(store.leaf_path("bad", "cert.pem")) is None
        count = issued_count(b)
        again = ensure_leaves(store, "clients", leaves[:1], backend=b)
        assert again[0]["action"] == "unchanged" and issued_count(b) == count  # no second serial for "good"
    finally:
        b.ca.ensure_roles("seam-clients")


@pytest.mark.parametrize("item, hint", [
    ({"name": "o", "profile": "client", "common_name": "o", "organization": "Org"}, "common name only.*organization"),
    ({"name": "u", "profile": "client", "common_name": "u", "crl_url": "http://crl.example.com/"},
     "crl_url is not supported"),
])
def test_leaf_specs_openbao_cannot_honour_are_refused_before_signing(bao, hierarchy, store, item, hint):
    b = backend(bao, store)
    count = issued_count(b)
    with pytest.raises(PkiError, match=hint):
        ensure_leaves(store, "clients", [specs.leaf_spec(item)], backend=b)
    assert issued_count(b) == count


def test_host_key_csr_is_signed_and_revoked_from_an_empty_cache(bao, hierarchy, store, tmp_path):
    b = backend(bao, store)
    key = keys.generate(keys.key_spec("ec"))
    report = csr.host_report("host7", _csr(key))
    spec = specs.leaf_spec({"name": "host7", "profile": "client", "common_name": "host7", "key_location": "host"})
    result = ensure_leaves(store, "clients", [spec], reports={"host7": report}, backend=b)[0]
    assert result["action"] == "issued" and result["key_location"] == "host"
    shutil.rmtree(store.root)  # the cache is gone: revoke by name finds it by common name in OpenBao
    out = b.revoke(names=["host7"], cas=["root", "clients"])
    assert [(e["serial"], e["action"]) for e in out["revoked"]] == [(result["serial"], "revoked")]
    assert crl.check(store, ["clients"], include_parents=True)["problems"] == []
    assert b.revoke(names=["host7"], cas=["root", "clients"])["changed"] is False
    rows = {r["serial"]: r for r in b.list_issued(["root", "clients"])}
    assert rows[result["serial"]]["revoked"]


def test_revoking_an_unknown_name_changes_nothing(bao, hierarchy, store):
    with pytest.raises(PkiError, match="no certificate named 'nobody'"):
        backend(bao, store).revoke(names=["nobody"], cas=["clients"])


def test_the_documented_issue_policy_is_enough_for_the_backend(bao, tmp_path):
    """docs/openbao/mtls-issue.hcl: sign, revoke, CRL validity and re-signing, the report - nothing more needed."""
    admin = choose(Store(str(tmp_path / "admin")), "openbao", {"addr": bao.addr, "token": bao.token,
                                                               "mount_prefix": "mtls/"})
    for s in CAS:
        admin.ensure_ca(s)
    text = open(os.path.join(DOCS, "mtls-issue.hcl")).read()
    role_id, secret_id = approle(bao, "seam-issue", {"mtls-issue": text})
    store = Store(str(tmp_path / "issue"))
    b = choose(store, "openbao", {"addr": bao.addr, "role_id": role_id, "secret_id": secret_id,
                                  "mount_prefix": "mtls/"})
    spec = specs.leaf_spec({"name": "p1", "profile": "client", "common_name": "p1"})
    issued = ensure_leaves(store, "clients", [spec], backend=b)[0]
    out = b.revoke(names=["p1"], cas=["root", "clients"], valid_days=5)  # a new CRL validity: config/crl, rotate
    assert [e["action"] for e in out["revoked"]] == ["revoked"]
    assert all("validity_changed" in c["reasons"] for c in out["crls"])
    assert [r["revoked"] is not None for r in b.list_issued(["clients"]) if r["serial"] == issued["serial"]] == [True]
