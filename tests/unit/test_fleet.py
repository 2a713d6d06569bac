"""Inventory-to-certificate mapping and the PKI facts nginx templates need (plugins/module_utils/fleet.py)."""

from ansible_collections.mtls.rollout.plugins.module_utils import fleet

A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"


def test_server_certificates_put_host_ip_and_names_in_the_san():
    hostvars = {"web1": {"ansible_host": "10.0.0.5", "mtls_server_names": ["web1.example.com", "*.example.com",
                                                                           "192.0.2.7"], "mtls_server_ips": ["::1"]},
                "web2": {"ansible_host": "web2.internal"}}
    certs = fleet.server_certificates(["web1", "web2"], hostvars)
    assert certs[0] == {"name": "web1-server", "profile": "server", "common_name": "web1.example.com",
                        "dns": ["web1.example.com", "*.example.com"], "ip": ["10.0.0.5", "::1", "192.0.2.7"]}
    assert certs[1]["dns"] == ["web2"] and certs[1]["ip"] == []  # a host name in ansible_host is no IP


def test_client_certificates_per_host_and_identities():
    hostvars = {"app1": {"mtls_client_pkcs12_password": "pw", "mtls_client_pkcs12_encryption": "compat"},
                "app2": {"mtls_client_common_name": "svc-app2"}}
    certs = fleet.client_certificates(["app1", "app2"], hostvars, [{"name": "alice"}])
    assert certs[0] == {"name": "app1", "profile": "client", "common_name": "app1",
                        "pkcs12": {"password": "pw", "encryption": "compat"}}
    assert certs[1]["common_name"] == "svc-app2" and "pkcs12" not in certs[1]
    assert certs[2] == {"name": "alice", "profile": "client", "common_name": "alice"}


def test_verify_depth_counts_intermediates_of_the_deepest_chain():
    assert fleet.verify_depth([A + "\n" + B]) == 1  # client-ca + root
    assert fleet.verify_depth([A + B, A + B + A]) == 2  # int2 + int1 + root
    assert fleet.verify_depth([A]) == 1  # issued by the root: nginx's minimum


def test_pem_bundle_keeps_each_certificate_once_in_order():
    assert fleet.pem_bundle([A + "\n" + B + "\n", B + "\n" + A]) == A + "\n" + B + "\n"
    assert fleet.pem_bundle("junk") == ""
