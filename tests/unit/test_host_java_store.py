"""Java stores written on the host (plugins/module_utils/host/java_store.py) with the real keytool: what keytool
reads back, idempotence, what makes a store be written again, passwords never on a command line, clear errors."""

import datetime as dt
import os
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ansible_collections.mtls.rollout.plugins.module_utils.host import java_store

PASSWORD = "St0re pass'word"
NOW = dt.datetime.now(dt.timezone.utc)


def certificate(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def listing(path, store_type, password):
    """{alias: entry type} as keytool lists the store."""
    proc = subprocess.run(["keytool", "-list", "-keystore", str(path), "-storetype", store_type.upper(),
                           "-storepass:env", "PW"], env=dict(os.environ, PW=password), capture_output=True,
                          text=True, check=True)
    return {line.split(",")[0]: line.rstrip(", ").rsplit(", ", 1)[1]
            for line in proc.stdout.splitlines() if line.endswith("Entry, ")}


@pytest.fixture
def argv(monkeypatch):
    """Every keytool command line (a spy: the commands still run)."""
    seen, real = [], subprocess.run

    def spy(args, *a, check=False, **kw):
        seen.append(list(args))
        return real(args, *a, check=check, **kw)
    monkeypatch.setattr(java_store.subprocess, "run", spy)
    return seen


@pytest.mark.parametrize("store_type", ["pkcs12", "jks"])
def test_truststore_holds_the_certificates_and_a_second_run_changes_nothing(tmp_path, argv, store_type):
    roots = [("mtls-rollout-root", pem(certificate("root")[1])), ("mtls-rollout-root2", pem(certificate("r2")[1]))]
    path = tmp_path / "trust" / "truststore"
    first = java_store.ensure(str(path), store_type, PASSWORD, roots, mode=0o644)
    assert (first["changed"], first["reason"]) == (True, "missing")
    assert listing(path, store_type, PASSWORD) == {"mtls-rollout-root": "trustedCertEntry",
                                                   "mtls-rollout-root2": "trustedCertEntry"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(f"{path}.meta").st_mode) == 0o600
    assert argv and not any(PASSWORD in " ".join(a) for a in argv)  # never on a command line
    before = path.read_bytes()
    assert java_store.ensure(str(path), store_type, PASSWORD, roots)["changed"] is False
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("trust/*.tmp-*"))


def test_keystore_holds_the_identity_of_the_bundle(tmp_path, argv):
    key, cert = certificate("alice")
    bundle = tmp_path / "client.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, None, serialization.BestAvailableEncryption(b"bundle-pw")))
    path = tmp_path / "keystore.jks"
    java_store.ensure(str(path), "jks", PASSWORD, bundle=str(bundle), bundle_password="bundle-pw")
    assert listing(path, "jks", PASSWORD) == {"alice": "PrivateKeyEntry"}
    assert not any("bundle-pw" in " ".join(a) or PASSWORD in " ".join(a) for a in argv)
    assert java_store.ensure(str(path), "jks", PASSWORD, bundle=str(bundle), bundle_password="bundle-pw")[
        "changed"] is False


@pytest.mark.parametrize("change, reason", [
    ("password", "settings changed"), ("certificates", "certificates changed"), ("store", "store changed outside "
                                                                                 "this module")])
def test_what_writes_the_store_again(tmp_path, change, reason):
    roots = [("a", pem(certificate("a")[1]))]
    path = tmp_path / "truststore.p12"
    java_store.ensure(str(path), "pkcs12", PASSWORD, roots)
    password = PASSWORD
    if change == "password":
        password = "another-password"
    elif change == "certificates":
        roots = roots + [("b", pem(certificate("b")[1]))]
    else:
        path.write_bytes(b"not a keystore")
    assert java_store.ensure(str(path), "pkcs12", password, roots, check=True) == {
        "changed": True, "path": str(path), "reason": reason}
    assert java_store.ensure(str(path), "pkcs12", password, roots)["reason"] == reason
    assert set(listing(path, "pkcs12", password)) == {a for a, _unused in roots}


def test_bad_input_is_refused_naming_it(tmp_path, monkeypatch):
    roots = [("a", pem(certificate("a")[1]))]
    with pytest.raises(java_store.JavaStoreError, match="at least 6 characters"):
        java_store.ensure(str(tmp_path / "t.p12"), "pkcs12", "short", roots)
    with pytest.raises(java_store.JavaStoreError, match="unknown store type 'jceks': use pkcs12 or jks"):
        java_store.ensure(str(tmp_path / "t.p12"), "jceks", PASSWORD, roots)
    with pytest.raises(java_store.JavaStoreError, match="cannot read the PKCS#12 bundle"):
        java_store.ensure(str(tmp_path / "k.p12"), "pkcs12", PASSWORD, bundle=str(tmp_path / "none.p12"))
    # check mode on a first run: the bundle is not installed yet, the keystore would be written
    assert java_store.ensure(str(tmp_path / "k.p12"), "pkcs12", PASSWORD, bundle=str(tmp_path / "none.p12"),
                             check=True)["changed"] is True
    (tmp_path / "bad.p12").write_bytes(b"garbage")
    with pytest.raises(java_store.JavaStoreError, match="importing the identity .* failed"):
        java_store.ensure(str(tmp_path / "k.p12"), "pkcs12", PASSWORD, bundle=str(tmp_path / "bad.p12"))
    monkeypatch.setattr(java_store.shutil, "which", lambda name: None)
    with pytest.raises(java_store.JavaStoreError, match="keytool command is not installed"):
        java_store.ensure(str(tmp_path / "t.p12"), "pkcs12", PASSWORD, roots)
    assert not list(tmp_path.glob("k.p12*")) and not list(tmp_path.glob("t.p12*"))  # nothing half-written
