"""The crypto floor: N client certificates with PKCS#12 bundles by bare `cryptography`, no Ansible, no store.

Makes what mtls.rollout.certificates makes for each leaf: an EC P-256 key, a certificate signed by an
intermediate CA (same extensions: SKI, AKI, basicConstraints, keyUsage, EKU clientAuth; SHA-256), and the
six files certs/<name>/{key,cert,chain,fullchain,ca}.pem and bundle.p12, the bundle with the engine's
`modern` settings (AES-256-CBC, PBKDF2-HMAC-SHA256 at 20000 rounds, SHA-256 MAC; key, cert, chain).
Files are written plainly (no fsync, no temp file + rename, no lock, no index): the floor.

  python bench/floor.py --n 1000 --out DIR [--workers 2]      # prints one JSON line
  python bench/floor.py --make-ca DIR                          # only DIR/ca/{root,client-ca}/{cert,key}.pem
  python bench/floor.py --make-csrs N --out FILE               # N keys' CSRs (host keys), as JSON items

Only the loop over the N certificates is timed (in-process, perf_counter); the CA is made before it.
"""

import argparse
import datetime as dt
import json
import multiprocessing
import os
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = b"bench-p12-password"
LEAF_DAYS = 365


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(sign=False, cert_sign=False):
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def make_ca(out):
    """root -> client-ca (EC P-256), written as out/ca/<name>/{cert,key}.pem; returns the four objects."""
    now = dt.datetime.now(dt.timezone.utc)
    root_key, ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def ca_cert(subject, key, issuer, issuer_key, issuer_cert, path_length):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1825))
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
             .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
             .add_extension(_key_usage(cert_sign=True), critical=True))
        aki = (x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()) if issuer_cert is None else
               x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                   issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value))
        return b.add_extension(aki, critical=False).sign(issuer_key, hashes.SHA256())

    root = ca_cert(_name("bench Root CA"), root_key, _name("bench Root CA"), root_key, None, None)
    ca = ca_cert(_name("bench Client CA"), ca_key, root.subject, root_key, root, 0)
    for name, cert, key in (("root", root, root_key), ("client-ca", ca, ca_key)):
        d = os.path.join(out, "ca", name)
        os.makedirs(d, mode=0o700, exist_ok=True)
        _write(os.path.join(d, "cert.pem"), cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(os.path.join(d, "key.pem"), key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()), 0o600)
    return root, ca, ca_key


def _write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


_CTX = {}


def _init(root, ca, ca_key, out):
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    pem = serialization.Encoding.PEM
    _CTX.update(root=root, ca=ca, ca_key=ca_key, out=out, now=dt.datetime.now(dt.timezone.utc),
                aki=x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                chain_pem=ca.public_bytes(pem), root_pem=root.public_bytes(pem),
                p12_enc=(serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(20000)
                         .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                         .build(PASSWORD)))


def one(name):
    c = _CTX
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(c["ca"].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(c["now"] - dt.timedelta(minutes=5))
            .not_valid_after((c["now"] + dt.timedelta(days=LEAF_DAYS)).replace(microsecond=0))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(c["aki"], critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(c["ca_key"], hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    p12 = pkcs12.serialize_key_and_certificates(name.encode(), key, cert, [c["ca"], c["root"]], c["p12_enc"])
    d = os.path.join(c["out"], "certs", name)
    os.makedirs(d, mode=0o700, exist_ok=True)
    _write(os.path.join(d, "key.pem"), key_pem, 0o600)
    _write(os.path.join(d, "cert.pem"), cert_pem, 0o644)
    _write(os.path.join(d, "chain.pem"), c["chain_pem"], 0o644)
    _write(os.path.join(d, "fullchain.pem"), cert_pem + c["chain_pem"], 0o644)
    _write(os.path.join(d, "ca.pem"), c["root_pem"], 0o644)
    _write(os.path.join(d, "bundle.p12"), p12, 0o600)
    return len(p12)


def run(n, out, workers=1):
    root, ca, ca_key = make_ca(out)
    names = [f"client{i:04d}" for i in range(n)]
    _init(root, ca, ca_key, out)
    cpu0, start = time.process_time(), time.perf_counter()
    if workers <= 1:
        for name in names:
            one(name)
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:  # workers inherit _CTX
            pool.map(one, names, chunksize=max(1, n // (workers * 8)))
    seconds = time.perf_counter() - start
    return {"n": n, "workers": workers, "seconds": seconds, "cpu_seconds_main": time.process_time() - cpu0}


def make_csrs(n, path):
    """The certificate items of N hosts that made their own EC P-256 keys: name, common_name and CSR (PEM)."""
    items = []
    for i in range(n):
        name = f"client{i:04d}"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(_name(name)).sign(key, hashes.SHA256())
        items.append({"name": name, "common_name": name,
                      "csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"certs": items}, f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int)
    ap.add_argument("--out")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--make-ca", metavar="DIR")
    ap.add_argument("--make-csrs", type=int, metavar="N")
    a = ap.parse_args(argv)
    if a.make_csrs:
        make_csrs(a.make_csrs, a.out)
        return 0
    if a.make_ca:
        make_ca(a.make_ca)
        return 0
    if not (a.n and a.out):
        ap.error("--n and --out are required")
    print(json.dumps(run(a.n, a.out, a.workers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
