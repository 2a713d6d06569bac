"""Shared module pieces: the compact invocation of a module taking a long list; the certificates module's
``results`` option (the changed certificates only, for lists of thousands)."""

import json
import os
import subprocess
import sys

from ansible_collections.mtls.rollout.plugins.module_utils import module_args
from ansible_collections.mtls.rollout.plugins.modules import certificates as certificates_module


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


def _run_module(tmp_path, args):
    """The certificates module as Ansible runs it (its own process, arguments from a file); its JSON result."""
    path = certificates_module.__file__
    collections_root = path[:path.rindex(os.sep + "ansible_collections" + os.sep)]
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_tmpdir": str(tmp_path)}}))
    run = subprocess.run([sys.executable, path, str(args_file)], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": collections_root}, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def test_certificates_results_changed_returns_the_changed_ones_and_counts_all(pki, tmp_path):
    defaults = {"profile": "client", "pkcs12": {"password": "p12-secret-pw"}}
    args = {"pki_dir": pki.root, "issuer": "int", "defaults": defaults,
            "certificates": [{"name": "a", "common_name": "a"}, {"name": "b", "common_name": "b"}]}
    first = _run_module(tmp_path, dict(args, results="changed"))
    assert [c["name"] for c in first["certificates"]] == ["a", "b"] and first["summary"]["issued"] == 2
    args["certificates"].append({"name": "c", "common_name": "c"})
    again = _run_module(tmp_path, dict(args, results="changed"))
    assert [c["action"] for c in again["certificates"]] == ["issued"]
    assert again["summary"] == {"issued": 1, "renewed": 0, "updated": 0, "unchanged": 2, "refused": 0}
    full = _run_module(tmp_path, args)
    assert [c["name"] for c in full["certificates"]] == ["a", "b", "c"] and not full["changed"]
    assert full["invocation"]["module_args"]["certificates"][0] == {"name": "a", "common_name": "a"}
    assert "p12-secret-pw" not in json.dumps(full)
