"""What the engine writes, checked by independent tools: openssl, keytool (Java) and pkilint.

pkilint is run with its RFC 5280 linters (``lint_pkix_cert``, ``lint_pkix_signer_signee_cert_chain``) at
severity INFO and up. The findings expected for this internal CA are listed in ``EXPECTED_CERT_FINDINGS``
and ``EXPECTED_WILDCARD_FINDINGS``; any other finding (a new warning, notice or error) fails the test:

* INFO ``pkix.subject_key_identifier_method_1_identified`` - every certificate: the SKI is the SHA-1 of
  the public key (RFC 5280 4.2.1.2 method 1). Informational only.
* ERROR ``pkix.invalid_domain_name_syntax`` - only for a wildcard dNSName (``*.example.com``): RFC 5280's
  "preferred name syntax" has no wildcards; RFC 6125/9525 and every TLS client accept them. Expected for
  wildcard certificates only, which are therefore linted separately.

Not findings of the PKIX linters, by design of an internal CA: no authorityInfoAccess, no CRL
distribution point and no certificate policies (those are CA/Browser Forum requirements for public CAs,
checked by ``lint_cabf_serverauth_cert``, which does not apply here).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ansible_collections.mtls.rollout.plugins.module_utils.pki import build, specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store
from pkitest import ca_cert, issue, make_ca, read_key, utcnow

OPENSSL = shutil.which("openssl")
KEYTOOL = shutil.which("keytool")
# pkilint is installed in the project venv (lint_pkix_cert, lint_pkix_signer_signee_cert_chain)
LINT_CERT = shutil.which("lint_pkix_cert", path=os.path.dirname(sys.executable)) or shutil.which("lint_pkix_cert")
PKILINT_PYTHON = None
if LINT_CERT:  # the interpreter the tool runs with, from its #! line
    with open(LINT_CERT) as f:
        PKILINT_PYTHON = f.readline()[2:].strip() or sys.executable

needs_openssl = pytest.mark.skipif(not OPENSSL, reason="openssl not installed")
needs_keytool = pytest.mark.skipif(not KEYTOOL, reason="keytool (Java) not installed")
needs_pkilint = pytest.mark.skipif(not PKILINT_PYTHON, reason="pkilint not installed in the venv")

EXPECTED_CERT_FINDINGS = {("INFO", "pkix.subject_key_identifier_method_1_identified")}
EXPECTED_WILDCARD_FINDINGS = EXPECTED_CERT_FINDINGS | {("ERROR", "pkix.invalid_domain_name_syntax")}
EXPECTED_CHAIN_FINDINGS = set()

# name: (issuer, item); issuers: root -> int1 -> int2, root -> edca (Ed25519)
LEAVES = {
    "web": ("int2", {"name": "web", "common_name": "web.example.com", "dns": ["www.example.com"],
                     "ip": ["10.0.0.5", "2001:db8::5"]}),
    "alice": ("int2", {"name": "alice", "profile": "client", "common_name": "alice", "organization": "Acme",
                       "email": ["alice@example.com"],
                       "pkcs12": {"password": "pw", "encryption": "compat", "friendly_name": "Alice Laptop"}}),
    "svc": ("int1", {"name": "svc", "profile": "both", "common_name": "svc.example.com",
                     "pkcs12": {"password": "pw", "encryption": "modern"}}),
    "direct": ("root", {"name": "direct", "common_name": "direct.example.com", "key_type": "rsa", "key_size": 2048}),
    "edge": ("edca", {"name": "edge", "common_name": "edge.example.com", "key_type": "ed25519"}),
    "p384": ("int1", {"name": "p384", "profile": "client", "common_name": "p384", "curve": "P-384"}),
    "wild": ("int2", {"name": "wild", "dns": ["*.example.com", "example.com"]}),
}
PURPOSES = {"web": ["sslserver"], "alice": ["sslclient"], "svc": ["sslserver", "sslclient"], "direct": ["sslserver"],
            "edge": ["sslserver"], "p384": ["sslclient"], "wild": ["sslserver"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("tools") / "pki"))
    make_ca(store, "root", passphrase="root-pass", path_length=2,
            subject={"common_name": "Acme Root CA", "organization": "Acme", "country": "DE"})
    make_ca(store, "int1", "root", issuer_passphrase="root-pass", path_length=1)
    make_ca(store, "int2", "int1", path_length=0)
    make_ca(store, "edca", "root", issuer_passphrase="root-pass", key_type="ed25519")
    for issuer in ("int2", "int1", "root", "edca"):
        issue(store, issuer, [item for i, item in LEAVES.values() if i == issuer],
              passphrase="root-pass" if issuer == "root" else None)
    return store


def run(*args, ok=True):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if ok:
        assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def openssl_verify(store, name, *extra):
    def path(f):
        return store.leaf_path(name, f)

    untrusted = ["-untrusted", path("chain.pem")] if os.path.getsize(path("chain.pem")) else []
    return run(OPENSSL, "verify", "-CAfile", path("ca.pem"), *untrusted, *extra, path("cert.pem"), ok=False)


# --- openssl ------------------------------------------------------------------------------------------

@needs_openssl
@pytest.mark.parametrize("name", list(LEAVES))
def test_openssl_verifies_every_leaf_for_its_purposes(world, name):
    for purpose in PURPOSES[name]:
        proc = openssl_verify(world, name, "-purpose", purpose)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), proc.stdout + proc.stderr
    if name != "direct":
        assert os.path.getsize(world.leaf_path(name, "chain.pem")) > 0
    else:  # right under the root: no intermediates, an empty chain.pem
        assert open(world.leaf_path(name, "chain.pem"), "rb").read() == b""


@needs_openssl
def test_openssl_three_level_chain(world):
    proc = openssl_verify(world, "web", "-show_chain", "-verify_hostname", "www.example.com")
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r"depth=(\d)", proc.stdout) == ["0", "1", "2", "3"]
    assert re.findall(r"depth=\d: (.*?)(?: \(untrusted\))?$", proc.stdout, re.M) == [
        "CN = web.example.com", "CN = int2", "CN = int1", "C = DE, O = Acme, CN = Acme Root CA"]
    # and without chain.pem the leaf does not verify: the intermediates are really needed
    proc = run(OPENSSL, "verify", "-CAfile", world.leaf_path("web", "ca.pem"), world.leaf_path("web", "cert.pem"),
               ok=False)
    assert proc.returncode != 0 and "unable to get local issuer certificate" in proc.stdout + proc.stderr
    # the CA chain itself: root -> int1 -> int2
    run(OPENSSL, "verify", "-CAfile", world.ca_path("root", "cert.pem"), "-untrusted",
        world.ca_path("int2", "chain.pem"), world.ca_path("int2", "cert.pem"))


@needs_openssl
@pytest.mark.parametrize("name, purpose", [("alice", "sslserver"), ("web", "sslclient"), ("p384", "sslserver")])
def test_openssl_refuses_the_wrong_purpose(world, name, purpose):
    proc = openssl_verify(world, name, "-purpose", purpose)
    assert proc.returncode != 0 and "error 26 at 0 depth lookup" in proc.stdout + proc.stderr  # unsuitable purpose


@needs_openssl
def test_openssl_checks_names_and_ips(world):
    for extra in (["-verify_hostname", "web.example.com"], ["-verify_ip", "10.0.0.5"], ["-verify_ip", "2001:db8::5"]):
        assert openssl_verify(world, "web", *extra).returncode == 0, extra
    assert openssl_verify(world, "wild", "-verify_hostname", "any.example.com").returncode == 0
    assert openssl_verify(world, "wild", "-verify_hostname", "example.com").returncode == 0
    proc = openssl_verify(world, "web", "-verify_hostname", "other.example.com")
    assert proc.returncode != 0 and "hostname mismatch" in (proc.stdout + proc.stderr).lower()
    proc = openssl_verify(world, "web", "-verify_ip", "10.0.0.6")
    assert proc.returncode != 0 and "ip address mismatch" in (proc.stdout + proc.stderr).lower()


@needs_openssl
def test_openssl_enforces_the_name_constraints_written(tmp_path):
    store = Store(str(tmp_path / "pki"))
    make_ca(store, "root", name_constraints_data={"permitted_dns": [".example.com"], "permitted_ip": ["10.0.0.0/8"]})
    make_ca(store, "int", "root")
    issue(store, "int", [{"name": "in", "common_name": "in.example.com", "ip": "10.1.1.1"}])
    assert openssl_verify(store, "in").returncode == 0
    # the engine refuses an outside name, so forge one with the CA's key to see openssl reject it
    spec = specs.leaf_spec({"name": "out", "dns": "out.example.net"})
    inter, now = ca_cert(store, "int"), utcnow()
    cert = build.leaf_certificate(spec, read_key(store.leaf_path("in", "key.pem")).public_key(), inter,
                                  read_key(store.ca_path("int", "key.pem")), x509.random_serial_number(), now,
                                  now + (inter.not_valid_after_utc - now) / 2)
    forged = tmp_path / "out.pem"
    forged.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    proc = run(OPENSSL, "verify", "-CAfile", store.leaf_path("in", "ca.pem"), "-untrusted",
               store.leaf_path("in", "chain.pem"), str(forged), ok=False)
    assert proc.returncode != 0 and "permitted subtree violation" in proc.stdout + proc.stderr


@needs_openssl
def test_openssl_reads_the_encrypted_ca_key(world):
    path = world.ca_path("root", "key.pem")
    out = run(OPENSSL, "asn1parse", "-in", path).stdout
    for algo in ("PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"):
        assert algo in out
    run(OPENSSL, "pkey", "-in", path, "-passin", "pass:root-pass", "-noout")
    proc = run(OPENSSL, "pkey", "-in", path, "-passin", "pass:wrong", "-noout", ok=False)
    assert proc.returncode != 0
    assert "ENCRYPTED" not in open(world.ca_path("int1", "key.pem")).read()  # no passphrase asked for int1


@needs_openssl
def test_openssl_sees_the_key_pairs_match(world):
    for name in LEAVES:
        cert_pub = run(OPENSSL, "x509", "-in", world.leaf_path(name, "cert.pem"), "-noout", "-pubkey").stdout
        key_pub = run(OPENSSL, "pkey", "-in", world.leaf_path(name, "key.pem"), "-pubout").stdout
        assert cert_pub == key_pub and "PUBLIC KEY" in cert_pub, name


@needs_openssl
def test_openssl_pkcs12_modern_profile(world):
    proc = run(OPENSSL, "pkcs12", "-info", "-noout", "-in", world.leaf_path("svc", "bundle.p12"), "-passin", "pass:pw")
    out = proc.stdout + proc.stderr
    assert "MAC: sha256" in out
    assert "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC" in out
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC" in out and "PRF hmacWithSHA256" in out
    assert "3DES" not in out and "TripleDES" not in out and "sha1" not in out.lower().replace("hmacwithsha1", "")
    assert out.count("Certificate bag") == 3  # leaf, int1, root
    proc = run(OPENSSL, "pkcs12", "-info", "-noout", "-in", world.leaf_path("svc", "bundle.p12"), "-passin",
               "pass:wrong", ok=False)
    assert proc.returncode != 0


@needs_openssl
def test_openssl_pkcs12_compat_profile(world):
    # OpenSSL 3 needs the legacy provider for 3DES (-legacy); the bundle is meant for old readers
    proc = run(OPENSSL, "pkcs12", "-legacy", "-info", "-noout", "-in", world.leaf_path("alice", "bundle.p12"),
               "-passin", "pass:pw")
    out = proc.stdout + proc.stderr
    assert "MAC: sha1" in out
    assert "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC" in out
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC" in out
    assert "AES" not in out and "PBES2" not in out
    assert out.count("Certificate bag") == 4  # leaf, int2, int1, root
    certs = run(OPENSSL, "pkcs12", "-legacy", "-nokeys", "-in", world.leaf_path("alice", "bundle.p12"),
                "-passin", "pass:pw").stdout
    assert "friendlyName: Alice Laptop" in certs


JVM_FAST = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]  # quicker start-up, same keytool


@pytest.fixture(scope="module")
def keytool_lists(world):
    """keytool -list -v on both bundles (and one with a wrong password), run concurrently."""
    jobs = {(name, pw): [KEYTOOL, *JVM_FAST, "-list", "-v", "-storetype", "PKCS12", "-keystore",
                         world.leaf_path(name, "bundle.p12"), "-storepass", pw]
            for name, pw in (("alice", "pw"), ("svc", "pw"), ("alice", "wrong"))}
    procs = {k: subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k, a in jobs.items()}
    return {k: (p.wait(timeout=120), p.communicate()[0]) for k, p in procs.items()}


@needs_keytool
@pytest.mark.parametrize("name, alias, chain", [("alice", "alice laptop", 4), ("svc", "svc", 3)])
def test_keytool_reads_the_bundles(keytool_lists, name, alias, chain):
    # compat (3DES/SHA-1) is what old Java needs; Java 17 here reads the modern (AES/PBKDF2) one too
    rc, out = keytool_lists[(name, "pw")]
    assert rc == 0, out
    assert "Your keystore contains 1 entry" in out
    # Java shows the friendly name as the alias (lower-cased by its PKCS12 keystore)
    assert re.search(r"^Alias name: (.+)$", out, re.M).group(1) == alias
    assert "Entry type: PrivateKeyEntry" in out
    assert f"Certificate chain length: {chain}" in out


@needs_keytool
def test_keytool_checks_the_password(keytool_lists):
    rc, out = keytool_lists[("alice", "wrong")]
    assert rc != 0 and "password was incorrect" in out.lower()


# --- pkilint --------------------------------------------------------------------------------------

# pkilint's own command-line entry points, called for every job in one separate interpreter (starting one
# process per certificate costs ~0.5 s each); prints {label: the tool's JSON output}.
LINT_RUNNER = """
import contextlib, io, json, sys
from pkilint.bin import lint_pkix_cert, lint_pkix_signer_signee_cert_chain
tools = {"cert": lint_pkix_cert.main, "chain": lint_pkix_signer_signee_cert_chain.main}
out = {}
for label, (tool, args) in json.load(sys.stdin).items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tools[tool](args)
    out[label] = buf.getvalue()
print(json.dumps(out))
"""


def _lint_all(jobs):
    """{label: (tool, args)} -> {label: set of (severity, code)} at INFO and above."""
    proc = subprocess.run([PKILINT_PYTHON, "-c", LINT_RUNNER], input=json.dumps(jobs), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return {label: {(f["severity"], f["code"]) for r in json.loads(out)["results"] for f in r["finding_descriptions"]}
            for label, out in json.loads(proc.stdout).items()}


@pytest.fixture(scope="module")
def lint_findings(world):
    cert = {n: world.ca_path(n, "cert.pem") for n in ("root", "int1", "int2", "edca")}
    cert.update({n: world.leaf_path(n, "cert.pem") for n in LEAVES})
    jobs = {n: ("cert", ["lint", "-s", "INFO", "-f", "JSON", p]) for n, p in cert.items()}
    pairs = [("root", "int1"), ("int1", "int2"), ("root", "edca")] + [(i, n) for n, (i, _unused) in LEAVES.items()]
    for issuer, subject in pairs:
        jobs[f"{issuer}>{subject}"] = ("chain", ["lint", "-s", "INFO", "-f", "JSON", cert[issuer], cert[subject]])
    # a pair that does not belong together: proves the chain linter really looks
    jobs["int1>web (wrong issuer)"] = ("chain", ["lint", "-s", "INFO", "-f", "JSON", cert["int1"], cert["web"]])
    return _lint_all(jobs)


@needs_pkilint
@pytest.mark.parametrize("name", ["root", "int1", "int2", "edca", "web", "alice", "svc", "direct", "edge", "p384"])
def test_pkilint_certificate_findings_are_the_expected_ones(lint_findings, name):
    assert lint_findings[name] == EXPECTED_CERT_FINDINGS
    assert not any(severity in ("ERROR", "FATAL") for severity, _unused in lint_findings[name])


@needs_pkilint
def test_pkilint_wildcard_finding_is_the_known_rfc5280_one(lint_findings):
    assert lint_findings["wild"] == EXPECTED_WILDCARD_FINDINGS


@needs_pkilint
def test_pkilint_chains_are_clean(lint_findings):
    chains = {k: v for k, v in lint_findings.items() if ">" in k and "wrong" not in k}
    assert len(chains) == 3 + len(LEAVES)
    assert all(v == EXPECTED_CHAIN_FINDINGS for v in chains.values()), chains
    assert ("ERROR", "pkix.signature_verification_failed") in lint_findings["int1>web (wrong issuer)"]
