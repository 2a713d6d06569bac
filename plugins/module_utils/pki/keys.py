"""Key specs, generation, (de)serialization and pair checks."""

from dataclasses import dataclass

from ..cryptography_dep import record_missing

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()

from .errors import PkiError

CURVES = ("P-256", "P-384", "P-521")
_CURVE_ALIASES = {"secp256r1": "P-256", "prime256v1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521",
                  "p256": "P-256", "p384": "P-384", "p521": "P-521"}
RSA_SIZES = (2048, 3072, 4096)
KEY_TYPES = ("ec", "rsa", "ed25519")


@dataclass(frozen=True)
class KeySpec:
    type: str = "ec"
    size: int = 0  # RSA only
    curve: str = ""  # EC only

    def __str__(self):
        return {"ec": f"ec {self.curve}", "rsa": f"rsa {self.size}", "ed25519": "ed25519"}[self.type]


def key_spec(key_type="ec", key_size=None, curve=None):
    """Validate and normalise a key spec from options."""
    key_type = (key_type or "ec").lower()
    if key_type not in KEY_TYPES:
        raise PkiError(f"unknown key_type {key_type!r}: valid key types are {', '.join(KEY_TYPES)}")
    if key_type == "rsa":
        size = int(key_size or 3072)
        if size < 2048:
            raise PkiError(f"key_size {size} is too small for RSA: use at least 2048 (one of "
                           f"{', '.join(map(str, RSA_SIZES))})")
        if size not in RSA_SIZES:
            raise PkiError(f"unsupported RSA key_size {size}: valid sizes are {', '.join(map(str, RSA_SIZES))}")
        return KeySpec("rsa", size=size)
    if key_type == "ec":
        name = curve or {None: "P-256", 256: "P-256", 384: "P-384", 521: "P-521"}.get(
            int(key_size) if key_size else None)
        if name is None:
            raise PkiError(f"unsupported EC key_size {key_size!r}: use 256, 384 or 521 (or curve P-256/P-384/P-521)")
        name = _CURVE_ALIASES.get(name.lower(), name.upper())
        if name not in CURVES:
            raise PkiError(f"unknown curve {curve!r}: valid curves are {', '.join(CURVES)}")
        return KeySpec("ec", curve=name)
    return KeySpec("ed25519")


def _curve(name):
    """The curve object of a CURVES name (made on use: cryptography may be absent at import time)."""
    return {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}[name]()


def generate(spec):
    if spec.type == "ec":
        return ec.generate_private_key(_curve(spec.curve))
    if spec.type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.size)
    return ed25519.Ed25519PrivateKey.generate()


def spec_of(key):
    """The KeySpec of a private or public key."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        names = {_curve(name).name: name for name in CURVES}
        return KeySpec("ec", curve=names.get(key.curve.name, key.curve.name))
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return KeySpec("rsa", size=key.key_size)
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return KeySpec("ed25519")
    raise PkiError(f"unsupported key algorithm {type(key).__name__}")


def to_pem(key, passphrase=None):
    """PKCS#8 PEM, encrypted (AES-256-CBC, PBKDF2) when a passphrase is given."""
    enc = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def from_pem(data, path, passphrase=None):
    """Load a private key; errors name the file and whether the passphrase was the problem."""
    pw = passphrase.encode() if passphrase else None
    try:
        return serialization.load_pem_private_key(data, password=pw, unsafe_skip_rsa_key_validation=True)
    except TypeError as e:
        if pw is None:
            raise PkiError(f"{path} is encrypted: a passphrase is needed to use it", "passphrase_required") from None
        if "not encrypted" in str(e):
            return serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
        raise PkiError(f"cannot read private key {path}: {e}", "corrupt") from None
    except ValueError:
        if b"ENCRYPTED" in data and pw is not None:
            raise PkiError(f"wrong passphrase for {path}: the key could not be decrypted", "bad_passphrase") from None
        raise PkiError(f"{path} is not a readable PEM private key (corrupted or truncated); restore it from "
                       f"a backup or remove it deliberately to make a new one", "corrupt") from None


def is_encrypted(data):
    return b"ENCRYPTED" in data[:64]


def public_der(key):
    """SubjectPublicKeyInfo DER of a private or public key, for pair comparisons."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
