"""Argument-spec pieces shared by the modules (plain dicts, no Ansible imports)."""

PKI_DIR = {"type": "path", "default": "~/.local/share/mtls-rollout/pki"}

SUBJECT = {"type": "dict", "options": {k: {"type": "str"} for k in (
    "common_name", "organization", "organizational_unit", "country", "state", "locality", "email")}}


def fail_json_kwargs(error):
    """What a module passes to fail_json for an engine error."""
    return {"msg": str(error), "error_code": getattr(error, "code", "error")}


DIFF_FIELDS = ("serial", "subject", "issuer", "not_before", "not_after", "fingerprint_sha256")


def diff(before, after):
    """Ansible diff of the public facts of a certificate (never key material)."""
    def show(facts):
        if not facts:
            return ""
        return "".join(f"{k}: {facts[k]}\n" for k in DIFF_FIELDS if facts.get(k) is not None)
    after_text = show(after) if after.get("serial") else ("(new certificate)\n" if after.get("changed") else show(before))
    return {"before": show(before), "after": after_text, "before_header": after.get("name", ""),
            "after_header": after.get("name", "")}


BACKEND = {"type": "str", "choices": ["local", "openbao"], "default": "local"}

OPENBAO = {"type": "dict", "options": {
    "addr": {"type": "raw", "required": True},  # one URL or a list of cluster node URLs
    "ca_cert": {"type": "path"},
    "token": {"type": "str", "no_log": True},
    "role_id": {"type": "str"},
    "secret_id": {"type": "str", "no_log": True},
    "namespace": {"type": "str"},
    "mount_prefix": {"type": "str", "default": ""},
    "insecure": {"type": "bool", "default": False},
}}


# one item of mtls.rollout.certificates' certificates (and its defaults)
_PKCS12 = {"type": "dict", "options": {
    "password": {"type": "str", "no_log": True},
    "encryption": {"type": "str", "choices": ["modern", "compat"]},
    "friendly_name": {"type": "str"},
    "include_chain": {"type": "bool"}}}
CERTIFICATE = {
    "name": {"type": "str"},  # required in each item, refused in defaults: checked by specs.leaf_spec
    "profile": {"type": "str", "choices": ["server", "client", "both"]},
    **{k: {"type": "str"} for k in ("common_name", "organization", "organizational_unit", "country", "state",
                                    "locality")},
    "subject": {"type": "dict"},
    "dns": {"type": "list", "elements": "str"},
    "ip": {"type": "list", "elements": "str"},
    "email": {"type": "list", "elements": "str"},
    "key_type": {"type": "str", "choices": ["ec", "rsa", "ed25519"]},
    "key_size": {"type": "int"},
    "curve": {"type": "str"},
    "valid_days": {"type": "float"},
    "renew_before_days": {"type": "float"},
    "rotate_key": {"type": "bool"},
    "force": {"type": "bool"},
    "key_location": {"type": "str", "choices": ["controller", "host"]},
    "crl_url": {"type": "str"},
    "csr": {"type": "str"},
    "held_certificate": {"type": "str"},
    "rotating": {"type": "bool"},
    "pkcs12": _PKCS12,
}

# mtls.rollout.certificates' options (also the bench's no-op module's, bench/playbooks/library/mtls_args_only.py)
CERTIFICATES = {
    "pki_dir": PKI_DIR,
    "backend": BACKEND,
    "openbao": OPENBAO,
    "issuer": {"type": "str", "required": True},
    "issuer_passphrase": {"type": "str", "no_log": True},
    "certificates": {"type": "list", "elements": "dict", "required": True, "options": CERTIFICATE},
    "defaults": {"type": "dict", "options": CERTIFICATE},  # so no_log reaches the nested pkcs12.password
    "renew_before_days": {"type": "float"},
    "force": {"type": "bool", "default": False},
    "results": {"type": "str", "choices": ["all", "changed"], "default": "all"},
}


def invocation(params, list_option):
    """The result's ``invocation`` with each item of ``list_option`` as given: Ansible's own fills every unset
    sub-option in as None, which for a list of 10,000 items is a third of the result. no_log values are masked
    in it by exit_json, as in Ansible's."""
    args = dict(params)
    args[list_option] = [{k: v for k, v in item.items() if v is not None} for item in params[list_option] or []]
    return {"module_args": args}
