"""PKCS#12 options as the certificates module passes them (unset suboptions arrive as None)."""

from ansible_collections.mtls.rollout.plugins.module_utils.pki import specs

UNSET = {"password": None, "encryption": None, "friendly_name": None, "include_chain": None}


def test_unset_include_chain_means_the_chain_is_included():
    spec = specs.leaf_spec({"name": "a", "profile": "client", "common_name": "a", "pkcs12": {**UNSET, "password": "pw"}})
    assert spec.pkcs12.include_chain is True
    off = specs.leaf_spec({"name": "a", "profile": "client", "common_name": "a",
                           "pkcs12": {**UNSET, "password": "pw", "include_chain": False}})
    assert off.pkcs12.include_chain is False


def test_unset_item_pkcs12_options_do_not_erase_the_defaults():
    defaults = {"profile": "client", "pkcs12": {"password": "secret", "encryption": "compat"}}
    spec = specs.leaf_spec({"name": "a", "common_name": "a", "pkcs12": {**UNSET, "friendly_name": "A"}}, defaults)
    assert (spec.pkcs12.password, spec.pkcs12.encryption, spec.pkcs12.friendly_name) == ("secret", "compat", "A")
