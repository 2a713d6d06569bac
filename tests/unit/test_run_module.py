"""plugin_utils.in_process.run_module: a module's code run on the stand-in for AnsibleModule gives what
AnsibleModule would: validated arguments, its messages, warnings, and no secret in the result."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.mtls.rollout.plugins.plugin_utils.in_process import run_module

SPEC = {
    "argument_spec": {
        "name": {"type": "str", "required": True},
        "mode": {"type": "str", "choices": ["a", "b"], "default": "a"},
        "secret": {"type": "str", "no_log": True},
        "items": {"type": "list", "elements": "dict", "options": {
            "password": {"type": "str", "no_log": True}, "n": {"type": "int"}}},
    },
    "supports_check_mode": True,
}


def _code(run):
    return SimpleNamespace(SPEC=SPEC, run=run)


def test_params_are_validated_and_coerced_and_the_result_comes_back():
    def run(module):
        module.warn("careful")
        module.exit_json(changed=module.check_mode, got=module.params)

    result = run_module("mtls.rollout.x", _code(run), {"name": "n", "items": [{"n": "3"}]}, True, False)
    assert result["changed"] is True
    assert result["got"]["mode"] == "a" and result["got"]["items"] == [{"n": 3, "password": None}]
    assert result["warnings"] == ["careful"]
    assert result["invocation"]["module_args"]["name"] == "n"


def test_a_secret_nested_anywhere_in_the_result_is_scrubbed():
    def run(module):
        pw = module.params["items"][0]["password"]
        module.fail_json(msg=f"bad {module.params['secret']}", deep={"list": [f"x{pw}y", {"k": pw}]})

    result = run_module("mtls.rollout.x", _code(run),
                        {"name": "n", "secret": "s3cr3t-top", "items": [{"password": "p4ss-nested"}]}, False, False)
    text = repr(result)
    assert result["failed"] is True
    assert "s3cr3t-top" not in text and "p4ss-nested" not in text
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in text


@pytest.mark.parametrize("args, message", [
    ({"name": "n", "colour": "blue"}, "Unsupported parameters for (mtls.rollout.x) module: colour"),
    ({"name": "n", "mode": "c"}, "value of mode must be one of: a, b, got: c"),
    ({}, "missing required arguments: name"),
])
def test_bad_arguments_fail_with_ansible_modules_message_and_run_nothing(args, message):
    ran = []
    result = run_module("mtls.rollout.x", _code(ran.append), args, False, False)
    assert result["failed"] is True and message in result["msg"], result
    assert not ran


def test_a_run_that_neither_exits_nor_fails_is_an_error():
    with pytest.raises(RuntimeError, match="without exit_json"):
        run_module("mtls.rollout.x", _code(lambda module: None), {"name": "n"}, False, False)


@pytest.mark.parametrize("secret", ["plain-pw", 'q"uo\\te', "ünï-çødé", "CaSe-MiXeD", "7"])
def test_a_secret_is_scrubbed_whatever_its_characters(secret):
    """The scrub is skipped only when the secret is nowhere in the result: quotes, backslashes, non-ASCII letters,
    other letter case and a number that is one must not hide it."""
    def run(module):
        module.exit_json(changed=False, deep=[{"k": f"<{secret}>"}], upper=secret.upper(), n=7)

    result = run_module("mtls.rollout.x", _code(run), {"name": "n", "secret": secret}, False, False)
    assert secret not in result["deep"][0]["k"], result
    if secret == "7":
        assert result["n"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", result


def test_no_secret_in_the_result_leaves_it_as_the_module_made_it():
    def run(module):
        module.exit_json(changed=False, items=[{"name": f"i{i}"} for i in range(3)])

    result = run_module("mtls.rollout.x", _code(run), {"name": "n", "secret": "nowhere-in-it"}, False, False)
    assert result["items"] == [{"name": "i0"}, {"name": "i1"}, {"name": "i2"}]


def test_only_the_parts_holding_a_secret_are_scrubbed():
    """The invocation's nested password is masked; the big list beside it, which holds none, is the module's own."""
    items = [{"name": f"i{i}"} for i in range(3)]

    def run(module):
        module.exit_json(changed=False, items=items,
                         invocation={"module_args": {"items": items, "defaults": {"secret": module.params["secret"]}}})

    result = run_module("mtls.rollout.x", _code(run), {"name": "n", "secret": "deep-pw"}, False, False)
    assert result["items"] is items and result["invocation"]["module_args"]["items"] is items
    assert result["invocation"]["module_args"]["defaults"]["secret"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
