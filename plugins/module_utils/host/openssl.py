"""The host's ``openssl`` command line: make keys, CSRs and PKCS#12 bundles where the key lives.

Runs on managed hosts (stdlib only, Python 3.8+; OpenSSL 1.1.1 and 3.x). A plain Debian host has the
``openssl`` command (ca-certificates depends on it) but rarely a recent Python ``cryptography``: Debian 11
ships 3.3, which cannot write the PKCS#12 profiles below. Secrets never go on a command line: passwords
travel on stdin, keys are read from their file or come back on stdout.
"""

import subprocess

KEY_TYPES = {"ec": ("P-256", "P-384", "P-521"), "rsa": (2048, 3072, 4096), "ed25519": (None,)}
_EC_SIZES = {256: "P-256", 384: "P-384", 521: "P-521"}
# The engine's PKCS#12 profiles (plugins/module_utils/pki/pkcs12.py), in openssl pkcs12 -export options.
PKCS12_PROFILES = {
    "modern": ["-keypbe", "AES-256-CBC", "-certpbe", "AES-256-CBC", "-macalg", "sha256", "-iter", "20000"],
    "compat": ["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-iter", "2048"],
}


class OpenSSLError(Exception):
    pass


def key_spec(key_type="ec", key_size=None, curve=None):
    """(type, parameter) as the engine's keys.key_spec validates it: ('ec', 'P-256'), ('rsa', 3072), ('ed25519', None)."""
    key_type = (key_type or "ec").lower()
    if key_type == "rsa":
        size = int(key_size or 3072)
        if size not in KEY_TYPES["rsa"]:
            raise OpenSSLError(f"unsupported RSA key_size {size}: valid sizes are 2048, 3072, 4096")
        return "rsa", size
    if key_type == "ec":
        name = (curve or _EC_SIZES.get(int(key_size or 256)) or "").upper().replace("PRIME256V1", "P-256")
        name = {"SECP256R1": "P-256", "SECP384R1": "P-384", "SECP521R1": "P-521", "P256": "P-256", "P384": "P-384",
                "P521": "P-521"}.get(name, name)
        if name not in KEY_TYPES["ec"]:
            raise OpenSSLError(f"unsupported EC curve {curve or key_size!r}: use P-256, P-384 or P-521")
        return "ec", name
    if key_type == "ed25519":
        return "ed25519", None
    raise OpenSSLError(f"unknown key_type {key_type!r}: valid key types are ec, rsa, ed25519")


def describe(spec):
    kind, param = spec
    return f"{kind} {param}" if param else kind


def run(args, stdin=None, what="openssl"):
    """stdout of ``openssl ARGS`` (bytes); stdin is never a terminal, so openssl never prompts."""
    try:
        # stdlib-only host code with no AnsibleModule to call run_command on (ansible-test 2.21's pylint asks for it)
        proc = subprocess.run(["openssl"] + list(args), input=stdin if stdin is not None else b"",  # pylint: disable=ansible-bad-function
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except FileNotFoundError:
        raise OpenSSLError("the openssl command is not installed on this host (Debian: apt-get install "
                           "openssl)") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OpenSSLError(f"{what} failed: {detail[-1] if detail else 'exit ' + str(proc.returncode)}")
    return proc.stdout


def generate_key(spec):
    """A new private key as PKCS#8 PEM (it comes back on stdout: it is never written by openssl itself)."""
    kind, param = spec
    if kind == "ec":
        args = ["-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{param}", "-pkeyopt", "ec_param_enc:named_curve"]
    elif kind == "rsa":
        args = ["-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{param}"]
    else:
        args = ["-algorithm", "ED25519"]
    return run(["genpkey"] + args, what=f"making a {describe(spec)} key")


def public_key_der(key_path):
    """SubjectPublicKeyInfo DER of the private key in ``key_path`` (never asks for a passphrase)."""
    return run(["pkey", "-in", key_path, "-passin", "pass:", "-pubout", "-outform", "DER"],
               what=f"reading the private key {key_path}")


def csr(key_path, spec, common_name):
    """A CSR (PEM) signed with the key: the proof that the host holds it. Names in it are ignored by the signer."""
    digest = [] if spec[0] == "ed25519" else ["-sha256"]
    subject = "/CN=" + "".join(c if c.isalnum() or c in ".-_@" else "_" for c in common_name)[:64]
    return run(["req", "-new", "-batch", "-key", key_path, "-passin", "pass:", "-subj", subject] + digest,
               what=f"making a CSR with {key_path}")


def pkcs12_iterations_fixed():
    """True when this host's openssl cannot set PKCS#12 iterations: OpenSSL 1.1.1 has no ``pkcs12 -iter``
    and always uses 2048 (its bundles are still AES-256/SHA-256 for ``modern``)."""
    return run(["version"], what="openssl version").startswith(b"OpenSSL 1.")


def pkcs12_options(encryption):
    """The ``openssl pkcs12 -export`` options of a profile, as this host's openssl takes them."""
    options = list(PKCS12_PROFILES[encryption])
    if pkcs12_iterations_fixed():
        del options[options.index("-iter"):options.index("-iter") + 2]
    return options


def pkcs12(key_path, cert_path, chain_path, friendly_name, password, encryption):
    """A PKCS#12 bundle (bytes) of the key, the certificate and (if ``chain_path``) the CA chain."""
    if password:
        enc, passout, stdin = pkcs12_options(encryption), ["-passout", "stdin"], password.encode() + b"\n"
    else:
        enc, passout, stdin = ["-keypbe", "NONE", "-certpbe", "NONE", "-nomac"], ["-passout", "pass:"], None
    args = ["pkcs12", "-export", "-inkey", key_path, "-passin", "pass:", "-in", cert_path, "-name", friendly_name]
    if chain_path:
        args += ["-certfile", chain_path]
    return run(args + enc + passout, stdin=stdin, what="building the PKCS#12 bundle")
