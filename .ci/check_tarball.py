"""Fail when a built collection tarball holds something that must never ship.

Checks member names (virtualenvs, caches, test output, generated PKI: keys, PKCS#12 bundles) and
contents (PEM private keys). usage: python check_tarball.py mtls-rollout-X.Y.Z.tar.gz
"""

import fnmatch
import re
import sys
import tarfile

FORBIDDEN_NAMES = [
    ".venv/*", ".cache/*", ".ansible/*", ".git/*", ".ci/*", "tests/output/*", ".pytest_cache/*",
    "*/__pycache__/*", "*.pyc", "pki/*", "artifacts/*", "*.key", "*.p12", "*.pfx", "*/key.pem", "key.pem",
    "*.tar.gz",
    # development files: the tools' pins, benchmarks, molecule scenarios, make and lint settings
    "requirements-dev.*", "bench/*", "molecule/*", "Makefile", ".ansible-lint",
]
# a PEM private key block with its base64 body (not just the header line, which tests may mention)
PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:[A-Za-z0-9+/=:, -]*\r?\n)*?"
                             rb"[A-Za-z0-9+/=]{40,}\r?\n")


def problems(path):
    found = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            hits = [p for p in FORBIDDEN_NAMES if fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name + "/", p)]
            if hits:
                found.append(f"{name}: matches {hits[0]}")
            elif member.isfile():
                data = tar.extractfile(member).read()
                if PRIVATE_KEY_PEM.search(data):
                    found.append(f"{name}: contains a PEM private key")
    return found


def main(paths):
    status = 0
    for path in paths:
        bad = problems(path)
        for line in bad:
            print(f"{path}: {line}", file=sys.stderr)
        if bad:
            status = 1
        else:
            with tarfile.open(path) as tar:
                count = sum(1 for m in tar.getmembers() if m.isfile())
            print(f"{path}: {count} files, no keys, caches or virtualenvs")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) if sys.argv[1:] else "usage: python check_tarball.py TARBALL...")
