"""PKCS#12 bundles in two encryption profiles."""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat, pkcs12

# modern: AES-256-CBC with PBKDF2-HMAC-SHA256 and a SHA-256 MAC (OpenSSL 3 default; macOS 14+,
#         Windows 10 1709+, Java 11.0.12+, Firefox, Chromium/NSS).
# compat: PBE-SHA1-3DES and a SHA-1 MAC, readable by older macOS keychains, Windows and Java keystores.
_KDF_ROUNDS = {"modern": 20000, "compat": 2048}


def _encryption(profile, password):
    builder = PrivateFormat.PKCS12.encryption_builder().kdf_rounds(_KDF_ROUNDS[profile])
    if profile == "modern":
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
    return builder.build(password.encode())


def bundle(spec, key, cert, chain):
    """Serialize key, certificate and (optionally) the CA chain; ``spec`` is a Pkcs12Spec."""
    cas = list(chain) if spec.include_chain else None
    enc = _encryption(spec.encryption, spec.password) if spec.password else NoEncryption()
    return pkcs12.serialize_key_and_certificates(spec.friendly_name.encode(), key, cert, cas or None, enc)
