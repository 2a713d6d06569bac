"""The seam with OpenBao behind it: ensure_leaves signing through OpenBaoBackend (a real dev server), the store
only a cache. Batches over a bounded pool, a refused item mid-batch, unsupported leaf specs, revocations from an
empty cache that the cached CRL check then agrees with.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import crl, csr, keys, pem, pkcs12, specs
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
@pytest.mark.parametrize("before", [0, 24])
def test_leaf_specs_openbao_cannot_honour_are_refused_before_signing(bao, hierarchy, store, item, hint, before,
                                                                     monkeypatch):
    """Alone, or last of a list long enough to be signed in chunks (writers forked between them): nothing of the
    list is signed."""
    monkeypatch.setattr(pkcs12, "PARALLEL_MIN", 1)
    b = backend(bao, store)
    count = issued_count(b)
    fine = [{"name": f"ok{i}", "profile": "client", "common_name": f"ok{i}"} for i in range(before)]
    with pytest.raises(PkiError, match=hint):
        ensure_leaves(store, "clients", [specs.leaf_spec(i) for i in fine + [item]], backend=b)
    assert issued_count(b) == count


def test_check_mode_names_a_spec_openbao_cannot_honour(bao, hierarchy, store):
    """Check mode tells the truth: the run it previews would be refused, so it is refused too."""
    b = backend(bao, store)
    with pytest.raises(PkiError, match="crl_url is not supported"):
        ensure_leaves(store, "clients", [specs.leaf_spec({"name": "u", "profile": "client", "common_name": "u",
                                                          "crl_url": "http://crl.example.com/"})],
                      backend=b, check=True)


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


KILLED_RUN = textwrap.dedent("""
    import json, sys
    from ansible_collections.mtls.rollout.plugins.module_utils.pki import csr, specs
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.choice import backend
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves
    from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
    args = json.load(open(sys.argv[1]))
    store = Store(args["pki"])
    leaves = [specs.leaf_spec({"name": n, "profile": "client", "common_name": n, "key_location": "host"})
              for n in args["csrs"]]
    reports = {n: csr.host_report(n, c) for n, c in args["csrs"].items()}
    ensure_leaves(store, "clients", leaves, reports=reports, backend=backend(store, "openbao", args["openbao"]))
""")


def test_a_run_killed_mid_batch_keeps_what_was_signed_and_a_rerun_signs_it_not_again(bao, hierarchy, store,
                                                                                     tmp_path):
    """kill -9 of the module while OpenBao signs a batch of host-key CSRs: every certificate that arrived is in the
    cache whole (never a part of a file), and the re-run deploys those instead of signing them again: at most the
    requests in flight at the kill (the pool's size) are signed twice. (Before, nothing reached the store until
    the batch was done, so the re-run signed everything again.)"""
    n = 1000
    b = backend(bao, store)
    names = [f"k{i:04d}" for i in range(n)]
    csrs = {name: _csr(keys.generate(keys.key_spec("ec"))).decode() for name in names}
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"pki": store.root, "csrs": csrs, "openbao": {
        "addr": bao.addr, "token": bao.token, "mount_prefix": "seam-"}}))
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    before = issued_count(b)
    run = subprocess.Popen([sys.executable, str(script), str(args)], env={**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in sys.path if p)})
    try:
        deadline = time.monotonic() + 120
        while issued_count(b) - before < 150:
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    assert run.returncode == -signal.SIGKILL
    signed_before_kill = issued_count(b) - before
    assert signed_before_kill < n and store.read(store.index_path) is None  # killed mid-batch, before the commit
    kept = {}
    for name in names:
        data = store.read(store.leaf_path(name, "cert.pem"))
        if data is not None:  # whole, and for the host's key
            cert = pem.load_cert(data, name)
            assert keys.public_der(cert.public_key()) == keys.public_der(csr.host_report(name, csrs[name]).public_key)
            kept[name] = pem.serial_hex(cert)
    # each certificate's fullchain/chain/ca files follow it during the batch (a writer thread: those not yet
    # written at the kill are mended by the re-run; before, none until the commit), whole
    chained = [name for name in kept if store.read(store.leaf_path(name, "ca.pem")) is not None]
    assert chained, (len(kept), len(chained))
    for name in chained:
        cert, chain = (store.read(store.leaf_path(name, f)) for f in ("cert.pem", "chain.pem"))
        assert store.read(store.leaf_path(name, "fullchain.pem")) == cert + chain and chain
    leaves = [specs.leaf_spec({"name": name, "profile": "client", "common_name": name, "key_location": "host"})
              for name in names]
    reports = {name: csr.host_report(name, c) for name, c in csrs.items()}
    results = ensure_leaves(store, "clients", leaves, reports=reports, backend=b)
    duplicates = issued_count(b) - before - n
    assert duplicates <= b.client.pool_size, (duplicates, len(kept), signed_before_kill)
    assert signed_before_kill - len(kept) <= b.client.pool_size  # only what was in flight is not in the cache
    by_name = {r["name"]: r for r in results}
    assert all(by_name[name]["action"] == "updated" and by_name[name]["serial"] == serial
               and "issued earlier, not on the host yet" in by_name[name]["reasons"] for name, serial in kept.items())
    assert {r["action"] for r in results if r["name"] not in kept} == {"issued"}
    assert not [f for _d, _s, files in os.walk(store.root) for f in files if ".tmp-" in f]  # no temp file left
    ca_pem = store.read(store.leaf_path(names[0], "ca.pem"))
    for name in names:  # every leaf's cache complete after the re-run
        cert, chain = (store.read(store.leaf_path(name, f)) for f in ("cert.pem", "chain.pem"))
        assert store.read(store.leaf_path(name, "fullchain.pem")) == cert + chain
        assert store.read(store.leaf_path(name, "ca.pem")) == ca_pem
