"""Shared module pieces: the compact invocation of a module taking a long list."""

from ansible_collections.mtls.rollout.plugins.module_utils import module_args


def test_invocation_lists_each_item_as_given_and_leaves_the_params_alone():
    params = {"issuer": "int", "defaults": {"profile": "client", "dns": None},
              "certificates": [{"name": "a", "dns": None, "pkcs12": {"password": "secret", "encryption": None}},
                               {"name": "b", "common_name": "b", "ip": None}]}
    got = module_args.invocation(params, "certificates")["module_args"]
    assert got["certificates"] == [{"name": "a", "pkcs12": {"password": "secret", "encryption": None}},
                                   {"name": "b", "common_name": "b"}]
    assert got["issuer"] == "int" and got["defaults"] == params["defaults"]
    assert params["certificates"][0]["dns"] is None  # the module's params are not changed


def test_invocation_of_an_empty_list():
    assert module_args.invocation({"certificates": None}, "certificates") == {"module_args": {"certificates": []}}
