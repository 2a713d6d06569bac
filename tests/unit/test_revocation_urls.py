"""Issue 15, item 11: with a crl_url, leaves and intermediates point clients at their issuer's CRL (CRL
distribution point <url><issuer>.crl) and certificate (AIA caIssuers <url><issuer>.crt); a root points nowhere;
a changed URL is a spec change with a reason; without one nothing changes for existing certificates."""

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError
from pkitest import DAY, by_name, ca_cert, issue, leaf_cert, make_ca, utcnow

URL = "http://crl.example.com/pki/"
NOW = utcnow()
WEB = {"name": "web", "common_name": "web.example.com"}
ALICE = {"name": "alice", "profile": "client", "common_name": "alice"}


def urls(cert):
    """(CRL distribution point URLs, caIssuers URLs) of a certificate."""
    try:
        cdp = [n.value for p in cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
               for n in p.full_name]
    except x509.ExtensionNotFound:
        cdp = []
    try:
        aia = [d.access_location.value for d in cert.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess).value if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS]
    except x509.ExtensionNotFound:
        aia = []
    return cdp, aia


@pytest.fixture
def pki(store):
    make_ca(store, "root", crl_url=URL, now=NOW)
    make_ca(store, "int", "root", crl_url=URL, now=NOW)
    return store


def test_leaves_and_intermediates_point_at_their_issuers_crl_and_certificate(pki):
    issue(pki, "int", [WEB, ALICE], defaults={"crl_url": URL}, now=NOW)
    for name in ("web", "alice"):
        assert urls(leaf_cert(pki, name)) == ([URL + "int.crl"], [URL + "int.crt"])
    assert urls(ca_cert(pki, "int")) == ([URL + "root.crl"], [URL + "root.crt"])
    assert urls(ca_cert(pki, "root")) == ([], [])


def test_the_url_gets_its_slash_and_a_second_run_changes_nothing(pki):
    issue(pki, "int", [WEB], defaults={"crl_url": URL.rstrip("/")}, now=NOW)
    assert urls(leaf_cert(pki, "web"))[0] == [URL + "int.crl"]
    again = by_name(issue(pki, "int", [WEB], defaults={"crl_url": URL}, now=NOW + DAY))
    assert again["web"]["action"] == "unchanged"
    assert make_ca(pki, "int", "root", crl_url=URL, now=NOW + DAY)["action"] == "unchanged"


def test_a_changed_url_reissues_with_its_reason(pki):
    issue(pki, "int", [WEB], defaults={"crl_url": URL}, now=NOW)
    other = "http://revocation.example.org/"
    result = by_name(issue(pki, "int", [WEB], defaults={"crl_url": other}, now=NOW + DAY))["web"]
    assert (result["action"], result["reasons"]) == ("renewed", ["spec_changed: crl_url"])
    assert urls(leaf_cert(pki, "web")) == ([other + "int.crl"], [other + "int.crt"])
    ca = make_ca(pki, "int", "root", crl_url=other, now=NOW + DAY)
    assert ("spec_changed: crl_url") in ca["reasons"]
    result = by_name(issue(pki, "int", [WEB], now=NOW + 2 * DAY))["web"]  # URL taken away: re-issued without
    assert result["reasons"] == ["spec_changed: crl_url"] and urls(leaf_cert(pki, "web")) == ([], [])


def test_without_a_url_certificates_stay_as_they_were(store):
    make_ca(store, "root", now=NOW)
    make_ca(store, "int", "root", now=NOW)
    issue(store, "int", [WEB], now=NOW)
    assert urls(leaf_cert(store, "web")) == ([], [])
    assert by_name(issue(store, "int", [WEB], now=NOW + DAY))["web"]["action"] == "unchanged"
    assert make_ca(store, "int", "root", now=NOW + DAY)["action"] == "unchanged"


@pytest.mark.parametrize("bad", ["https://crl.example.com/", "ftp://x/", "http://", "crl.example.com",
                                 "http://crl.example.com/?x=1", "http://crl example.com/", "http://crl.exämple/"])
def test_a_bad_url_is_refused_naming_it(bad):
    with pytest.raises(PkiError, match=r"invalid crl_url .*http://crl\.example\.com/"):
        specs.leaf_spec(dict(WEB, crl_url=bad))
    with pytest.raises(PkiError, match="invalid crl_url"):
        specs.ca_spec("int", issuer="root", crl_url=bad)
