from ansible_collections.mtls.rollout.plugins.module_utils import specs


def test_default_leaf_is_ec_p256_server():
    spec = specs.leaf_spec({"name": "web", "dns": ["web.example.com"]})
    assert (spec.profile, str(spec.key)) == ("server", "ec P-256")
