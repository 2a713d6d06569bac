"""The code that runs on hosts keeping their own keys (plugins/module_utils/host): real openssl, no cryptography."""

import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ansible_collections.mtls.rollout.plugins.module_utils.host import der, file_set, host_key, openssl, pkcs12_bundle
from ansible_collections.mtls.rollout.plugins.module_utils.pki import csr, specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.ensure_leaves import ensure_leaves

EC = ("ec", "P-256")


def ensure(path, spec=EC, **kw):
    return host_key.ensure(str(path), spec, **kw)


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def calls(monkeypatch):
    """Every openssl command line run by the host code (a spy: the commands still run)."""
    seen = []
    real = openssl.run

    def spy(args, *a, **k):
        seen.append(args[0])
        return real(args, *a, **k)
    monkeypatch.setattr(openssl, "run", spy)
    return seen


@pytest.mark.parametrize("spec", [EC, ("ec", "P-384"), ("rsa", 2048), ("ed25519", None)])
def test_key_made_once_with_its_mode_and_a_csr_for_it(tmp_path, spec, calls):
    key = tmp_path / "d" / "key.pem"
    first = ensure(key, spec, mode=0o400, dir_mode=0o750)
    assert first["changed"] and first["created"] == [str(key)] and not first["rotating"]
    assert mode_of(key) == 0o400 and mode_of(key.parent) == 0o750
    assert b"PRIVATE KEY" in key.read_bytes() and "PRIVATE" not in repr(first)
    request = x509.load_pem_x509_csr(first["csr"].encode())
    assert request.is_signature_valid
    assert der.key_kind(der.csr_spki(request.public_bytes(serialization.Encoding.DER))) == spec
    calls.clear()
    content, inode = key.read_bytes(), key.stat().st_ino
    second = ensure(key, spec, mode=0o400, dir_mode=0o750)
    assert not second["changed"] and second["csr"] == first["csr"]
    assert calls == ["pkey"], "an idempotent run reads the public key once and signs nothing"
    assert key.read_bytes() == content and key.stat().st_ino == inode


def test_mode_is_repaired_and_reported(tmp_path):
    key = tmp_path / "key.pem"
    ensure(key)
    os.chmod(key, 0o644)
    assert ensure(key)["changed"] and mode_of(key) == 0o600


@pytest.mark.parametrize("damage", ["garbage", "truncated", "symlink", "encrypted"])
def test_unreadable_key_is_an_error_and_never_replaced(tmp_path, damage):
    key = tmp_path / "key.pem"
    ensure(key)
    if damage == "garbage":
        key.write_bytes(b"-----BEGIN " + b"PRIVATE KEY-----\nAAAA\n-----END " + b"PRIVATE KEY-----\n")
    elif damage == "truncated":
        key.write_bytes(key.read_bytes()[:60])
    elif damage == "symlink":
        os.rename(key, tmp_path / "real.pem")
        os.symlink(tmp_path / "real.pem", key)
    else:
        subprocess.run(["openssl", "pkey", "-in", str(key), "-out", str(key) + ".enc", "-aes256", "-passout",
                        "pass:x"], check=True)
        os.replace(str(key) + ".enc", key)
    before = key.read_bytes() if damage != "symlink" else None
    with pytest.raises(host_key.HostKeyError) as info:
        ensure(key)
    assert str(key) in str(info.value) and "host " in str(info.value)
    if before is not None:
        assert key.read_bytes() == before
    assert not os.path.exists(str(key) + ".next")


def test_rotation_makes_the_next_key_and_keeps_the_current_one(tmp_path):
    key = tmp_path / "key.pem"
    first = ensure(key)
    current = key.read_bytes()
    rotating = ensure(key, rotate=True)
    assert rotating["rotating"] and rotating["pending_path"] == str(key) + ".next"
    assert key.read_bytes() == current and rotating["csr"] != first["csr"]
    again = ensure(key)  # a rotation in progress is resumed, not restarted
    assert again["rotating"] and again["csr"] == rotating["csr"] and not again["changed"]


def test_key_type_change_makes_a_next_key_of_the_new_type(tmp_path):
    key = tmp_path / "key.pem"
    ensure(key)
    result = ensure(key, ("rsa", 2048))
    assert result["rotating"] and result["key_type"] == "rsa 2048"
    assert der.key_kind(der.csr_spki(der.pem_blocks(result["csr"], "CERTIFICATE REQUEST")[0])) == ("rsa", 2048)
    back = ensure(key, EC)  # asked for the old type again: the pending rsa key is dropped
    assert not back["rotating"] and not os.path.exists(str(key) + ".next")


def test_check_mode_makes_nothing(tmp_path):
    key = tmp_path / "key.pem"
    result = ensure(key, check=True)
    assert result["changed"] and result["csr"] is None and not key.exists()


def _signed(pki, name, request_pem, profile="server"):
    item = {"name": name, "profile": profile, "common_name": f"{name}.example.com", "key_location": "host"}
    ensure_leaves(pki, "int", [specs.leaf_spec(item)], reports={name: csr.host_report(name, request_pem)})
    return pki.leaf_path(name)


def test_only_certificates_are_reported_back(tmp_path, pki):
    key = tmp_path / "key.pem"
    leaf = _signed(pki, "web", ensure(key)["csr"])
    held = tmp_path / "fullchain.pem"
    held.write_bytes(open(f"{leaf}/fullchain.pem", "rb").read() + key.read_bytes())  # a careless file
    facts = ensure(key, certificate_path=str(held))
    assert facts["certificate_matches_key"] is True
    assert facts["certificate"].count("BEGIN CERTIFICATE") == 1 and "PRIVATE" not in facts["certificate"]
    held.write_bytes(key.read_bytes())  # certificate_path pointed at the key by mistake
    facts = ensure(key, certificate_path=str(held))
    assert facts["certificate"] is None and facts["certificate_unreadable"] and "PRIVATE" not in repr(facts)


def test_install_moves_the_next_key_with_its_certificate(tmp_path, pki):
    key = tmp_path / "key.pem"
    ensure(key)
    old = key.read_bytes()
    leaf = _signed(pki, "web", ensure(key, rotate=True)["csr"])
    cert = tmp_path / "cert.pem"
    files = [{"path": str(cert), "content": open(f"{leaf}/cert.pem", "rb").read(), "mode": 0o644},
             {"path": str(key), "source": str(key) + ".next", "mode": 0o600}]
    pair = [{"certificate": str(cert), "key": str(key)}]
    assert sorted(file_set.apply(files, pairs=pair)) == [str(cert), str(key)]
    assert key.read_bytes() != old and not os.path.exists(str(key) + ".next")
    assert not os.path.exists(str(key) + ".next.csr")
    after = ensure(key, certificate_path=str(cert))
    assert after["certificate_matches_key"] is True and not after["changed"]  # the CSR moved along with the key


def test_install_with_a_key_that_does_not_fit_restores_everything(tmp_path, pki):
    key = tmp_path / "key.pem"
    ensure(key)
    old = key.read_bytes()
    leaf = _signed(pki, "web", ensure(key)["csr"])  # certificate for the current key...
    ensure(key, rotate=True)  # ...but the install brings the next one
    cert = tmp_path / "cert.pem"
    files = [{"path": str(cert), "content": open(f"{leaf}/cert.pem", "rb").read(), "mode": 0o644},
             {"path": str(key), "source": str(key) + ".next", "mode": 0o600}]
    with pytest.raises(file_set.FileSetError, match="does not belong"):
        file_set.apply(files, pairs=[{"certificate": str(cert), "key": str(key)}])
    assert key.read_bytes() == old and not cert.exists() and os.path.exists(str(key) + ".next")


@pytest.mark.parametrize("encryption, needles", [
    ("modern", ["AES-256-CBC", "hmacWithSHA256", "MAC: sha256"]),
    ("compat", ["pbeWithSHA1And3-KeyTripleDES-CBC", "MAC: sha1"]),
])
def test_pkcs12_built_on_the_host_in_the_engine_profiles(tmp_path, pki, encryption, needles, calls):
    key = tmp_path / "key.pem"
    leaf = _signed(pki, "alice", ensure(key)["csr"], profile="client")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(open(f"{leaf}/chain.pem", "rb").read() + open(f"{leaf}/ca.pem", "rb").read())
    bundle = tmp_path / "client.p12"
    args = (str(bundle), str(key), f"{leaf}/cert.pem", str(chain), "alice", "s3cret pw", encryption)
    assert pkcs12_bundle.ensure(*args)["changed"] and mode_of(bundle) == 0o600
    info = subprocess.run(["openssl", "pkcs12", "-info", "-in", str(bundle), "-noout", "-passin", "pass:s3cret pw"],
                          capture_output=True, text=True, check=True).stderr
    for needle in needles:
        assert needle in info, info
    loaded = pkcs12.load_pkcs12(bundle.read_bytes(), b"s3cret pw")
    assert loaded.cert.friendly_name == b"alice" and len(loaded.additional_certs) == 2
    assert der.csr_spki(der.pem_blocks(ensure(key)["csr"], "CERTIFICATE REQUEST")[0]) == \
        loaded.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    calls.clear()
    assert not pkcs12_bundle.ensure(*args)["changed"] and calls == []
    assert pkcs12_bundle.ensure(*args[:5], "other pw", encryption)["reason"] == "settings changed"
    assert "s3cret" not in (tmp_path / "client.p12.meta").read_text()


def test_host_code_runs_without_the_cryptography_library(tmp_path):
    """A plain Debian host may have no python3-cryptography: the host side must not need it."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", ".cache", "collections")
    code = ("import sys; sys.modules['cryptography'] = None\n"
            f"sys.path.insert(0, {os.path.abspath(root)!r})\n"
            "from ansible_collections.mtls.rollout.plugins.module_utils.host import host_key\n"
            f"r = host_key.ensure({str(tmp_path / 'k.pem')!r}, ('ec', 'P-256'))\n"
            "assert 'CERTIFICATE REQUEST' in r['csr']; print('ok')")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_prune_removes_unwanted_files_of_ours_in_the_same_change_and_restores_them_on_failure(tmp_path):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "mtls-rollout-old.crt").write_text("old root\n")
    (anchors / "mtls-rollout-root.crt").write_text("root\n")
    (anchors / "someone-else.crt").write_text("not ours\n")
    files = [{"path": str(anchors / "mtls-rollout-root.crt"), "content": b"root\n", "mode": 0o644},
             {"path": str(anchors / "mtls-rollout-new.crt"), "content": b"new root\n", "mode": 0o644}]
    prune = [{"path": str(anchors), "pattern": "mtls-rollout-*.crt"}]
    assert file_set.pruned(files, prune) == [str(anchors / "mtls-rollout-old.crt")]
    with pytest.raises(file_set.FileSetError):
        file_set.apply(files, validate="false", prune=prune)
    assert sorted(os.listdir(anchors)) == ["mtls-rollout-old.crt", "mtls-rollout-root.crt", "someone-else.crt"]
    assert sorted(file_set.apply(files, prune=prune)) == [str(anchors / "mtls-rollout-new.crt"),
                                                          str(anchors / "mtls-rollout-old.crt")]
    assert sorted(os.listdir(anchors)) == ["mtls-rollout-new.crt", "mtls-rollout-root.crt", "someone-else.crt"]
    assert file_set.apply(files, prune=prune) == []


def test_generation_keeps_what_a_change_replaced_until_confirmed_or_rolled_back(tmp_path):
    from ansible_collections.mtls.rollout.plugins.module_utils.host import generation
    gen = str(tmp_path / ".previous")
    cert, key, new = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "extra.conf"
    cert.write_bytes(b"cert 1\n")
    key.write_bytes(b"key 1\n")
    os.chmod(key, 0o400)

    def change(n):
        return [{"path": str(cert), "content": f"cert {n}\n".encode(), "mode": 0o644},
                {"path": str(key), "content": f"key {n}\n".encode(), "mode": 0o400},
                {"path": str(new), "content": b"new\n", "mode": 0o644}]
    file_set.apply(change(2), generation_dir=gen)
    file_set.apply(change(3), generation_dir=gen)  # interrupted before its gate: generation 1 stays the good one
    assert file_set.rollback(gen) == sorted([str(cert), str(key), str(new)])
    assert (cert.read_bytes(), key.read_bytes(), mode_of(key), new.exists()) == (b"cert 1\n", b"key 1\n", 0o400, False)
    assert generation.pending(gen) is None and os.listdir(gen) == []
    file_set.apply(change(4), generation_dir=gen)
    assert generation.clear(gen)  # confirmed: the old files (the old key among them) are gone from the host
    assert os.listdir(gen) == [] and file_set.rollback(gen) == []
    with pytest.raises(file_set.FileSetError):  # a change that fails leaves no generation behind
        file_set.apply(change(5), validate="false", generation_dir=gen)
    assert generation.pending(gen) is None and cert.read_bytes() == b"cert 4\n"


def test_a_rollback_that_does_not_validate_changes_nothing_and_keeps_the_generation(tmp_path):
    from ansible_collections.mtls.rollout.plugins.module_utils.host import generation
    gen, conf = str(tmp_path / ".previous"), tmp_path / "site.conf"
    conf.write_bytes(b"old\n")
    file_set.apply([{"path": str(conf), "content": b"new\n", "mode": 0o644}], generation_dir=gen)
    with pytest.raises(file_set.FileSetError):
        file_set.rollback(gen, validate="false")
    assert conf.read_bytes() == b"new\n" and generation.pending(gen) is not None
    assert file_set.rollback(gen, validate="true") == [str(conf)] and conf.read_bytes() == b"old\n"


def test_an_install_without_a_gate_drops_a_generation_left_pending(tmp_path):
    """A canary run interrupted before its gate, then normal runs: a later rollback must not go back past them."""
    from ansible_collections.mtls.rollout.plugins.module_utils.host import generation
    gen, crl = str(tmp_path / ".previous"), tmp_path / "crl.pem"
    crl.write_bytes(b"crl 1\n")
    file_set.apply([{"path": str(crl), "content": b"crl 2\n", "mode": 0o644}], generation_dir=gen)  # interrupted
    file_set.apply([{"path": str(crl), "content": b"crl 3\n", "mode": 0o644}], generation_dir=gen, confirm=True)
    assert generation.pending(gen) is None and file_set.rollback(gen) == [] and crl.read_bytes() == b"crl 3\n"
    file_set.apply([{"path": str(crl), "content": b"crl 3\n", "mode": 0o644}], generation_dir=gen)
    assert generation.pending(gen) is None  # nothing changed: nothing kept


def test_check_mode_of_an_install_whose_source_is_not_made_yet(tmp_path):
    files = [{"path": str(tmp_path / "key.pem"), "source": str(tmp_path / "key.pem.next"), "mode": 0o600}]
    assert file_set.plan(files, check=True) == [str(tmp_path / "key.pem")]
    with pytest.raises(file_set.FileSetError, match="does not exist"):
        file_set.plan([dict(files[0])])


def test_a_pending_key_takes_the_place_of_a_lost_one(tmp_path):
    key = tmp_path / "key.pem"
    ensure(key)
    rotating = ensure(key, rotate=True)
    pending = (tmp_path / "key.pem.next").read_bytes()
    key.unlink()
    facts = ensure(key)
    assert key.read_bytes() == pending and not (tmp_path / "key.pem.next").exists()
    assert not facts["rotating"] and facts["csr"] == rotating["csr"]


def test_check_mode_still_reports_the_csr_of_an_existing_key(tmp_path):
    key = tmp_path / "key.pem"
    made = ensure(key)
    os.unlink(str(key) + ".csr")
    facts = ensure(key, check=True)
    assert facts["csr"] is not None and not os.path.exists(str(key) + ".csr")
    assert der.csr_spki(der.pem_blocks(facts["csr"], "CERTIFICATE REQUEST")[0]) == \
        der.csr_spki(der.pem_blocks(made["csr"], "CERTIFICATE REQUEST")[0])


def test_pkcs12_check_mode_before_the_certificate_is_installed(tmp_path):
    result = pkcs12_bundle.ensure(str(tmp_path / "c.p12"), str(tmp_path / "key.pem"), str(tmp_path / "cert.pem"),
                                  None, "alice", "pw", check=True)
    assert result["changed"] and "not installed yet" in result["reason"]


def _cert(ca_key, ca_name, key, not_before, days=30, aki=True, cn="web"):
    """PEM of a certificate for ``key`` signed by ``ca_key`` as ``ca_name``, valid from ``not_before``."""
    import datetime as dt
    from cryptography.hazmat.primitives import hashes
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before)
               .not_valid_after(not_before + dt.timedelta(days=days)))
    if aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def lineage():
    """Two CAs with the same name (a store made again elsewhere), two host keys, and 'now'."""
    import datetime as dt
    from cryptography.hazmat.primitives.asymmetric import ec
    ca = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Server CA")])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return {"ca": ca, "ca_key": ec.generate_private_key(ec.SECP256R1()),
            "other_ca_key": ec.generate_private_key(ec.SECP256R1()),
            "key": ec.generate_private_key(ec.SECP256R1()), "other_key": ec.generate_private_key(ec.SECP256R1()),
            "now": now, "day": dt.timedelta(days=1)}


def _install(tmp_path, held, offered, keep_newer=True):
    path = tmp_path / "fullchain.pem"
    path.write_bytes(held)
    files = [{"path": str(path), "content": offered, "mode": 0o644, "keep_newer": keep_newer}]
    kept = file_set.keep_newer(files)
    return kept, file_set.apply(files), path.read_bytes()


def test_a_newer_certificate_of_the_same_ca_and_key_is_kept(tmp_path, lineage):
    lin = lineage
    older = _cert(lin["ca_key"], lin["ca"], lin["key"], lin["now"] - 2 * lin["day"])
    newer = _cert(lin["ca_key"], lin["ca"], lin["key"], lin["now"] - lin["day"])
    chain = _cert(lin["ca_key"], lin["ca"], lin["ca_key"], lin["now"] - 9 * lin["day"], cn="Server CA")
    kept, changed, now_held = _install(tmp_path, newer + chain, older + chain)
    assert changed == [] and now_held == newer + chain
    facts = x509.load_pem_x509_certificate(newer)
    assert kept == [{"path": str(tmp_path / "fullchain.pem"), "serial": format(facts.serial_number, "x"),
                     "not_before": facts.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "not_after": facts.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "offered_serial": format(x509.load_pem_x509_certificate(older).serial_number, "x"),
                     "offered_not_before": (lin["now"] - 2 * lin["day"]).strftime("%Y-%m-%dT%H:%M:%SZ")}]
    # the other way round, the newer one is installed as before
    kept, changed, now_held = _install(tmp_path, older, newer)
    assert kept == [] and changed == [str(tmp_path / "fullchain.pem")] and now_held == newer


@pytest.mark.parametrize("case", ["other CA key", "other CA name", "other host key", "expired", "not yet valid",
                                  "not marked", "not a certificate", "same start"])
def test_anything_but_a_newer_valid_certificate_of_the_lineage_is_replaced(tmp_path, lineage, case):
    lin = lineage
    now, day = lin["now"], lin["day"]
    offered = _cert(lin["ca_key"], lin["ca"], lin["key"], now - 20 * day)
    other_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Another CA")])
    held = {"other CA key": lambda: _cert(lin["other_ca_key"], lin["ca"], lin["key"], now - day),
            "other CA name": lambda: _cert(lin["ca_key"], other_name, lin["key"], now - day),
            "other host key": lambda: _cert(lin["ca_key"], lin["ca"], lin["other_key"], now - day),
            "expired": lambda: _cert(lin["ca_key"], lin["ca"], lin["key"], now - 10 * day, days=5),
            "not yet valid": lambda: _cert(lin["ca_key"], lin["ca"], lin["key"], now + day),
            "not marked": lambda: _cert(lin["ca_key"], lin["ca"], lin["key"], now - day),
            "not a certificate": lambda: b"-----BEGIN CERTIFICATE-----\nMAo=\n-----END CERTIFICATE-----\n",
            "same start": lambda: _cert(lin["ca_key"], lin["ca"], lin["key"], now - 20 * day)}[case]()
    kept, changed, now_held = _install(tmp_path, held, offered, keep_newer=case != "not marked")
    assert kept == [] and changed == [str(tmp_path / "fullchain.pem")] and now_held == offered


def test_certificate_facts_read_both_time_forms_and_certificates_without_aki(lineage):
    import datetime as dt
    lin = lineage
    early = dt.datetime(1951, 6, 1, tzinfo=dt.timezone.utc)  # UTCTime '51...': 1951, not 2051
    pem_ = _cert(lin["ca_key"], lin["ca"], lin["key"], early, days=365 * 120, aki=False)  # ends 2071: GeneralizedTime
    cert = x509.load_pem_x509_certificate(pem_)
    facts = der.certificate_facts(der.pem_blocks(pem_, "CERTIFICATE")[0])
    assert facts["not_before"] == cert.not_valid_before_utc == early
    assert facts["not_after"] == cert.not_valid_after_utc and facts["not_after"].year == 2071
    assert facts["aki"] is None and facts["serial"] == format(cert.serial_number, "x")
    assert facts["issuer"] == lin["ca"].public_bytes()
    assert facts["spki"] == lin["key"].public_key().public_bytes(serialization.Encoding.DER,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
