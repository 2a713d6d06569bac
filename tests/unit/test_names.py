"""names.py and specs.py: validation of names, subjects, keys and leaf/CA specs (pure, no store)."""

import ipaddress

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys, names, specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError


@pytest.mark.parametrize("value, expected", [
    ("www.example.com", "www.example.com"),
    ("WWW.Example.COM.", "www.example.com"),
    ("*.example.com", "*.example.com"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.c1.example", "a-b.c1.example"),
    ("localhost", "localhost"),
])
def test_dns_name_accepts_and_normalises(value, expected):
    assert names.dns_name(value) == expected


@pytest.mark.parametrize("value, hint", [
    ("bad_name.example.com", "label 'bad_name'"),
    ("-x.example.com", "label '-x'"),
    ("x-.example.com", "label 'x-'"),
    ("a..b", "label ''"),
    ("www.*.example.com", "only allowed as the whole left-most label"),
    ("foo*.example.com", "only allowed as the whole left-most label"),
    ("*.com", "at least two labels after it"),
    ("*", "at least two labels after it"),
    ("*.*.example.com", "only allowed as the whole left-most label"),
    ("bücher.example", "punycode"),
    ("a" * 64 + ".example.com", "1-63"),
    ("a\n.example.com", "label"),  # a newline inside must not slip past the label pattern
    ("", "non-empty"),
])
def test_dns_name_rejects_with_the_value_named(value, hint):
    with pytest.raises(PkiError) as info:
        names.dns_name(value)
    assert repr(value) in str(info.value)
    assert hint in str(info.value)


def test_dns_name_too_long():
    name = ".".join(["a" * 60] * 5)  # 304 characters
    with pytest.raises(PkiError, match="longer than 253"):
        names.dns_name(name)


def test_wildcard_refused_where_not_allowed():
    with pytest.raises(PkiError, match="wildcard is not allowed"):
        names.dns_name("*.example.com", allow_wildcard=False)


@pytest.mark.parametrize("value", ["192.0.2.10", " 10.0.0.1 ", "2001:db8::10", "::1"])
def test_ip_address_accepts(value):
    assert names.ip_address(value) == ipaddress.ip_address(value.strip())


@pytest.mark.parametrize("value", ["999.1.1.1", "10.0.0", "10.0.0.1/24", "host", "2001:db8:::1", ""])
def test_ip_address_rejects_naming_value(value):
    with pytest.raises(PkiError) as info:
        names.ip_address(value)
    assert f"invalid IP address {value!r}" in str(info.value)


@pytest.mark.parametrize("value", ["10.0.0.1/8", "10.0.0.0/33", "nonsense"])
def test_ip_network_rejects_host_bits_and_junk(value):
    with pytest.raises(PkiError, match="invalid IP network"):
        names.ip_network(value)


def test_email_normalises_domain_only():
    assert names.email("Alice.Smith@Example.COM") == "Alice.Smith@example.com"


@pytest.mark.parametrize("value", ["alice", "a@b@c", "@example.com", "al ice@example.com", "alice@bad_domain"])
def test_email_rejects(value):
    with pytest.raises(PkiError) as info:
        names.email(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["web", "web-01.example.com", "alice@example.com", "a_b", "X9"])
def test_store_name_accepts(value):
    assert names.store_name(value) == value


@pytest.mark.parametrize("value", ["../x", "a/b", "..", ".", "", "/abs", ".hidden", "web\n", "a b", "a\\b",
                                   "x" * 129, None, 7])
def test_store_name_rejects_anything_that_is_not_one_safe_component(value):
    with pytest.raises(PkiError) as info:
        names.store_name(value, "certificate name")
    assert f"invalid certificate name {value!r}" in str(info.value)


# --- keys -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, text", [
    ((None, None, None), "ec P-256"),
    (("ec", None, None), "ec P-256"),
    (("ec", 384, None), "ec P-384"),
    (("ec", None, "secp384r1"), "ec P-384"),
    (("EC", None, "prime256v1"), "ec P-256"),
    (("rsa", None, None), "rsa 3072"),
    (("rsa", 2048, None), "rsa 2048"),
    (("rsa", 4096, None), "rsa 4096"),
    (("ed25519", None, None), "ed25519"),
])
def test_key_spec(args, text):
    assert str(keys.key_spec(*args)) == text


@pytest.mark.parametrize("args, needle", [
    (("dsa", None, None), "unknown key_type 'dsa'"),
    (("rsa", 1024, None), "key_size 1024 is too small"),
    (("rsa", 2500, None), "unsupported RSA key_size 2500"),
    (("ec", 128, None), "unsupported EC key_size 128"),
    (("ec", None, "P-999"), "unknown curve 'P-999'"),
])
def test_key_spec_rejects(args, needle):
    with pytest.raises(PkiError, match=needle):
        keys.key_spec(*args)


@pytest.mark.parametrize("spec", ["ec P-256", "ec P-384", "rsa 2048", "ed25519"])
def test_generate_matches_spec(spec):
    kind, _sep, param = spec.partition(" ")
    ks = keys.key_spec(kind, int(param) if param.isdigit() else None, None if param.isdigit() else param or None)
    key = keys.generate(ks)
    assert keys.spec_of(key) == ks
    assert keys.spec_of(key.public_key()) == ks


def test_rsa_4096_generation(rsa4096_key):
    assert keys.spec_of(rsa4096_key) == keys.KeySpec("rsa", size=4096)
    assert rsa4096_key.public_key().public_numbers().e == 65537


def test_key_pem_roundtrip_plain_and_encrypted(tmp_path):
    key = keys.generate(keys.key_spec())
    plain = keys.to_pem(key)
    assert plain.startswith(b"-----BEGIN " b"PRIVATE KEY-----") and not keys.is_encrypted(plain)
    secret = keys.to_pem(key, "pw")
    assert secret.startswith(b"-----BEGIN " b"ENCRYPTED PRIVATE KEY-----") and keys.is_encrypted(secret)
    assert keys.public_der(keys.from_pem(secret, "k.pem", "pw")) == keys.public_der(key)
    with pytest.raises(PkiError, match="wrong passphrase for k.pem") as info:
        keys.from_pem(secret, "k.pem", "nope")
    assert info.value.code == "bad_passphrase"
    with pytest.raises(PkiError, match="k.pem is encrypted") as info:
        keys.from_pem(secret, "k.pem")
    assert info.value.code == "passphrase_required"
    # a passphrase given for a plain key is not an error
    assert keys.public_der(keys.from_pem(plain, "k.pem", "pw")) == keys.public_der(key)
    with pytest.raises(PkiError, match="k.pem is not a readable PEM private key") as info:
        keys.from_pem(plain[:60], "k.pem")
    assert info.value.code == "corrupt"


# --- subjects and specs --------------------------------------------------------------------------------

def test_subject_fixed_order_and_limits():
    subj = specs.subject({"common_name": "web", "country": "DE", "organization": "Acme"}, "x")
    assert [k for k, _unused in subj.attrs] == ["country", "organization", "common_name"]
    assert subj.to_x509().rfc4514_string() == "CN=web,O=Acme,C=DE"
    assert specs.Subject.from_x509(subj.to_x509()) == subj


@pytest.mark.parametrize("data, needles", [
    ({"common_name": "x" * 65}, ["longer than 64", "CA 'root'"]),
    ({"country": "Germany"}, ["'Germany'", "CA 'root'"]),
    ({"country": "de"}, ["'de'", "CA 'root'"]),
    ({"shoe_size": 42}, ["shoe_size", "CA 'root'"]),
    ({"email": "not-an-address"}, ["invalid e-mail address 'not-an-address'"]),
])
def test_subject_rejects(data, needles):
    with pytest.raises(PkiError) as info:
        specs.subject(data, "CA 'root'")
    for needle in needles:
        assert needle in str(info.value)


def test_leaf_spec_defaults_and_cn_in_san():
    spec = specs.leaf_spec({"name": "web", "common_name": "Web.Example.com",
                            "dns": ["web.example.com", "alt.example.com"]})
    assert (spec.profile, str(spec.key), spec.valid_days, spec.pkcs12) == ("server", "ec P-256", 365, None)
    assert spec.dns == ("web.example.com", "alt.example.com")  # CN folded in, no duplicate
    spec = specs.leaf_spec({"name": "ipweb", "common_name": "192.0.2.7"})
    assert [str(i) for i in spec.ip] == ["192.0.2.7"] and spec.dns == ()


def test_client_cn_is_not_put_into_san():
    spec = specs.leaf_spec({"name": "alice", "profile": "client", "common_name": "Alice Smith"})
    assert spec.san() == set()
    assert spec.subject.common_name == "Alice Smith"


def test_server_cn_must_be_a_name():
    with pytest.raises(PkiError, match="common_name 'Alice Smith' of server"):
        specs.leaf_spec({"name": "web", "common_name": "Alice Smith"})


def test_leaf_spec_merges_defaults_and_pkcs12():
    spec = specs.leaf_spec({"name": "c", "profile": "client", "common_name": "c", "pkcs12": {"friendly_name": "C"}},
                           {"organization": "Acme", "key_type": "ed25519",
                            "pkcs12": {"password": "pw", "encryption": "compat"}})
    assert spec.key == keys.KeySpec("ed25519")
    assert dict(spec.subject.attrs)["organization"] == "Acme"
    assert spec.pkcs12 == specs.Pkcs12Spec(password="pw", encryption="compat", friendly_name="C", include_chain=True)


def test_pkcs12_defaults_friendly_name_to_leaf_name():
    spec = specs.leaf_spec({"name": "c", "profile": "client", "common_name": "c", "pkcs12": {"password": "pw"}})
    assert (spec.pkcs12.friendly_name, spec.pkcs12.encryption) == ("c", "modern")


@pytest.mark.parametrize("item, needle", [
    ({"name": "w", "dns": "w.example.com", "profile": "server-client"}, "unknown profile 'server-client'"),
    ({"name": "w", "dns": "w.example.com", "colour": "red"}, "unknown option(s) colour"),
    ({"name": "w", "dns": "w.example.com", "pkcs12": {"encryption": "rc2"}}, "unknown pkcs12 encryption 'rc2'"),
    ({"name": "w", "dns": "w.example.com", "valid_days": 0}, "invalid valid_days 0"),
    ({"name": "w", "dns": "w.example.com", "valid_days": "soon"}, "invalid valid_days 'soon'"),
    ({"name": "w", "dns": "w.example.com", "renew_before_days": -1}, "invalid renew_before_days -1"),
    ({"name": "w", "profile": "server"}, "has no identity"),
    ({"name": "w", "profile": "server", "email": "w@example.com"}, "needs at least one DNS name or IP"),
    ({"dns": "w.example.com"}, "has no name"),
    ("web", "must be a dict"),
])
def test_leaf_spec_rejects(item, needle):
    with pytest.raises(PkiError) as info:
        specs.leaf_spec(item)
    assert needle in str(info.value)


def test_ca_spec_defaults():
    root = specs.ca_spec("root")
    assert (root.issuer, root.valid_days, root.path_length, str(root.key)) == (None, 3650, None, "ec P-256")
    assert root.subject.common_name == "root"
    inter = specs.ca_spec("int", {"organization": "Acme"}, "root")
    assert inter.valid_days == 1825
    assert inter.subject.common_name == "int" and dict(inter.subject.attrs)["organization"] == "Acme"


@pytest.mark.parametrize("kwargs, needle", [
    ({"name": "root", "issuer": "root"}, "names itself as issuer"),
    ({"name": "x", "path_length": -1}, "invalid path_length -1"),
    ({"name": "x", "path_length": "2"}, "invalid path_length '2'"),
    ({"name": "x", "name_constraints_data": {"permitted": ["a"]}}, "unknown name_constraints key(s) permitted"),
    ({"name": "x", "name_constraints_data": {"permitted_dns": ["*.example.com"]}}, "wildcard is not allowed"),
    ({"name": "x", "name_constraints_data": {"permitted_ip": ["10.0.0.1/8"]}}, "invalid IP network '10.0.0.1/8'"),
    ({"name": "../up"}, "invalid CA name '../up'"),
    ({"name": "x", "issuer": "a/b"}, "invalid issuer 'a/b'"),
])
def test_ca_spec_rejects(kwargs, needle):
    with pytest.raises(PkiError) as info:
        specs.ca_spec(**kwargs)
    assert needle in str(info.value)


def test_name_constraints_normalised_to_rfc5280_form():
    nc = specs.name_constraints({"permitted_dns": [".Example.com", "example.org", "example.org"],
                                 "excluded_ip": ["10.9.0.0/16"]}, "CA 'x'")
    # RFC 5280 has no leading-dot form for dNSName constraints: '.example.com' means example.com and below
    assert nc.permitted_dns == ("example.com", "example.org")
    assert nc.excluded_ip == (ipaddress.ip_network("10.9.0.0/16"),)
    assert nc and not specs.NameConstraints()


def test_flat_email_option_is_the_san_list_not_the_subject():
    spec = specs.leaf_spec({"name": "bob", "profile": "client", "common_name": "bob",
                            "email": ["bob@example.com", "b@Example.org"]})
    assert spec.email == ("bob@example.com", "b@example.org")
    assert dict(spec.subject.attrs) == {"common_name": "bob"}
    spec = specs.leaf_spec({"name": "bob", "profile": "client", "subject": {"common_name": "bob",
                                                                            "email": "bob@example.com"}})
    assert dict(spec.subject.attrs)["email"] == "bob@example.com" and spec.email == ()
