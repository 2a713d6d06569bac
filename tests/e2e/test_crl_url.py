"""Issue 15, item 11: with mtls_crl_url, certificates tell clients where revocation is checked (CRL
distribution point, AIA caIssuers), the nginx role serves those CRLs and CA certificates at that URL over plain
HTTP, testssl.sh's "Neither CRL nor OCSP URI provided" (HIGH) is gone, and the CRL fetched from the URL verifies
with openssl. Fleet: one nginx server, first rolled out without a URL (testssl reports the finding), then with
one (re-issued, reason spec_changed: crl_url), then again (nothing changes)."""

import json
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.e2e.helpers import recap, run_playbook

SITE = "mtls.rollout.site"
SERVER = 1
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    return make_module_fleet("crlurl", hosts=1, groups={"mtls_servers": [SERVER], "mtls_clients": []})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def url(fleet):
    return f"http://{fleet.host(SERVER).ip}/pki/"


def site_vars(pki, url=""):
    v = {"mtls_pki_dir": str(pki), "mtls_nginx_install": False}
    if url:
        v.update(mtls_crl_url=url, mtls_nginx_crl_publish=True)
    return v


def scan_revocation(fleet, tmp_path):
    """testssl.sh's revocation findings for the server: {id: (severity, text)} (cert_revocation is the HIGH
    "Neither CRL nor OCSP URI provided", cert_crlDistributionPoints the CRL URL it found)."""
    out = tmp_path / "testssl.json"
    out.unlink(missing_ok=True)
    proc = subprocess.run(["testssl", "--quiet", "--warnings", "off", "-S", "--jsonfile", str(out),
                           f"https://{fleet.host(SERVER).ip}/"], capture_output=True, text=True, timeout=600, check=False)
    findings = {f["id"]: (f["severity"], f["finding"]) for f in json.loads(out.read_text())
                if f["id"] in ("cert_revocation", "cert_crlDistributionPoints")}
    assert findings, proc.stdout[-3000:]
    return findings


@pytest.fixture(scope="module")
def without_url(fleet, pki, tmp_path_factory):
    out = run_playbook(SITE, fleet.inventory, site_vars(pki))[1]
    return out, scan_revocation(fleet, tmp_path_factory.mktemp("testssl"))


@pytest.fixture(scope="module")
def with_url(without_url, fleet, pki, url, tmp_path_factory):
    out = run_playbook(SITE, fleet.inventory, site_vars(pki, url), "-v")[1]
    return out, scan_revocation(fleet, tmp_path_factory.mktemp("testssl"))


def served_cert(fleet):
    pem = subprocess.run(["openssl", "s_client", "-connect", f"{fleet.host(SERVER).ip}:443", "-showcerts"],
                         input="", capture_output=True, text=True, timeout=30, check=False).stdout
    return x509.load_pem_x509_certificates(pem.encode())


def get(url):
    """(HTTP status, content type, body bytes) of a plain HTTP GET with curl."""
    proc = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", "-o", "/dev/stdout", url],
                          capture_output=True, timeout=30, check=False)
    head, _sep, body = proc.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), ctype, body


def test_without_a_url_testssl_reports_no_revocation_uri(without_url):
    assert without_url[1]["cert_revocation"] == ("HIGH", "Neither CRL nor OCSP URI provided")


def test_with_a_url_the_certificates_are_reissued_pointing_at_it(with_url, fleet, url):
    out = with_url[0]
    assert all(c["failed"] == 0 for c in recap(out).values()), out[-4000:]
    assert "spec_changed: crl_url" in out
    leaf, intermediate = served_cert(fleet)[:2]
    for cert, issuer in ((leaf, "server-ca"), (intermediate, "root")):
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for p in cdp for n in p.full_name] == [f"{url}{issuer}.crl"]
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [(d.access_method, d.access_location.value) for d in aia] == [
            (AuthorityInformationAccessOID.CA_ISSUERS, f"{url}{issuer}.crt")]


def test_testssl_finds_the_crl_uri(with_url, url):
    assert "cert_revocation" not in with_url[1]
    assert with_url[1]["cert_crlDistributionPoints"] == ("INFO", f"{url}server-ca.crl")


def test_the_crl_and_issuer_fetched_from_the_urls_verify_with_openssl(with_url, fleet, pki, tmp_path):
    leaf = served_cert(fleet)[0]
    crl_url = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
    ca_url = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value[0].access_location.value
    status, ctype, crl = get(crl_url)
    assert (status, ctype) == (200, "application/pkix-crl")
    status, ctype, ca = get(ca_url)
    assert (status, ctype) == (200, "application/pkix-cert")
    issuer = x509.load_der_x509_certificate(ca)  # DER, the issuer of the served leaf
    with open(f"{pki}/ca/server-ca/cert.pem", "rb") as f:
        assert issuer == x509.load_pem_x509_certificate(f.read())
    (tmp_path / "crl.der").write_bytes(crl)
    (tmp_path / "ca.pem").write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
    proc = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", tmp_path / "crl.der", "-CAfile",
                           tmp_path / "ca.pem", "-noout"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "verify OK" in proc.stderr + proc.stdout, proc.stderr
    # and the root's CRL, which the intermediate points at
    status, _unused, root_crl = get(f"{crl_url.rsplit('/', 1)[0]}/root.crl")
    assert status == 200 and x509.load_der_x509_crl(root_crl).issuer.rfc4514_string() != ""
    assert get(f"{crl_url.rsplit('/', 1)[0]}/nothing.crl")[0] == 404


def test_a_second_run_with_the_url_changes_nothing(with_url, fleet, pki, url):
    out = run_playbook(SITE, fleet.inventory, site_vars(pki, url))[1]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in recap(out).values()), out[-4000:]
