"""The OpenBao backend's pure parts: serial formats, CA parameters, refused specs, client configuration.

Everything that talks to a server is in tests/integration/test_openbao.py (real OpenBao, no mocks).
"""

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends import openbao
from ansible_collections.mtls.rollout.plugins.module_utils.pki.backends.openbao_http import Client, OpenBaoError
from ansible_collections.mtls.rollout.plugins.module_utils.pki.errors import PkiError


@pytest.mark.parametrize("given, hexed, colons", [
    ("0a:1b:00:ff", "a1b00ff", "0a:1b:00:ff"),
    ("00:00:01", "1", "01"),
    ("7F-3B", "7f3b", "7f:3b"),
    (0x1ABC, "1abc", "1a:bc"),
    ("1abc", "1abc", "1a:bc"),
])
def test_serials_as_the_local_engine_writes_them_and_as_openbao_wants_them(given, hexed, colons):
    assert openbao.serial_hex(given) == hexed
    assert openbao.serial_colons(given) == colons


@pytest.mark.parametrize("kwargs, expected", [
    ({}, {"key_type": "ec", "key_bits": 256}),
    ({"curve": "P-384"}, {"key_type": "ec", "key_bits": 384}),
    ({"key_type": "rsa", "key_size": 4096}, {"key_type": "rsa", "key_bits": 4096}),
    ({"key_type": "ed25519"}, {"key_type": "ed25519"}),
])
def test_ca_parameters_carry_the_key_spec(kwargs, expected):
    params = openbao._ca_params(specs.ca_spec("root", **kwargs))
    assert {k: params[k] for k in expected} == expected


def test_ca_parameters_carry_subject_path_length_and_constraints():
    spec = specs.ca_spec("int", {"common_name": "Int", "organization": "Org", "country": "DE"}, issuer="root",
                         path_length=0, name_constraints_data={"permitted_dns": ["example.com"]})
    params = openbao._ca_params(spec)
    assert params["common_name"] == "Int" and params["organization"] == ["Org"] and params["country"] == ["DE"]
    assert params["ou"] == [] and params["max_path_length"] == 0 and params["exclude_cn_from_sans"] is True
    assert params["permitted_dns_domains"] == ["example.com"]
    assert openbao._ca_params(specs.ca_spec("root"))["max_path_length"] == -1  # no limit


@pytest.mark.parametrize("spec_kwargs, hint", [
    ({"name_constraints_data": {"excluded_dns": ["bad.example.com"]}}, "permitted_dns only"),
    ({"name_constraints_data": {"permitted_ip": ["10.0.0.0/8"]}}, "permitted_dns only"),
    ({"name_constraints_data": {"permitted_dns": ["example.com"], "critical": False}}, "always marks"),
    ({"subject_data": {"common_name": "Root", "email": "ca@example.com"}}, "email address"),
])
def test_what_openbao_cannot_do_is_refused_with_the_reason(spec_kwargs, hint):
    with pytest.raises(PkiError, match=hint):
        openbao._supported(specs.ca_spec("root", **spec_kwargs))


@pytest.mark.parametrize("kwargs, hint", [
    ({"addr": []}, "no OpenBao address"),
    ({"addr": "bao.example.com:8200", "token": "t"}, "expected http"),
    ({"addr": "https://bao:8200", "token": "t", "ca_cert": "/nonexistent/ca.pem"}, "not a readable file"),
    ({"addr": "https://bao:8200", "role_id": "r"}, "both role_id and secret_id"),
])
def test_client_configuration_errors(kwargs, hint, monkeypatch):
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    with pytest.raises(OpenBaoError, match=hint) as e:
        Client(**kwargs)
    assert e.value.code == "config"


def test_ca_cert_that_is_not_a_certificate(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(OpenBaoError, match="no usable PEM CA certificate"):
        Client("https://bao:8200", token="t", ca_cert=str(bad))


def test_unsafe_transport_is_named_in_warnings_and_secrets_stay_out_of_repr():
    secret = "hvs.secret-token-value"
    insecure = Client(["https://bao1:8200", "https://bao2:8200"], token=secret, insecure=True)
    assert any("verification of OpenBao is OFF" in w for w in insecure.warnings)
    assert secret not in repr(insecure) and "bao2" in repr(insecure)
    plain = Client("http://bao.example.com:8200", token=secret)
    assert any("unencrypted" in w for w in plain.warnings)
    assert Client("http://127.0.0.1:8200", token=secret).warnings == []
    approle = Client("https://bao:8200", role_id="role", secret_id="secret-id-value")
    assert "secret-id-value" not in repr(approle) and "approle" in repr(approle)


def test_mount_names_are_prefix_plus_ca_name():
    assert Client("https://bao:8200", token="t", mount_prefix="mtls/").mount("int") == "mtls/int"
    assert Client("https://bao:8200", token="t").mount("int") == "int"
