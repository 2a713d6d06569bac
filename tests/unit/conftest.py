"""PKI fixtures for the engine's unit tests; helpers live in pkitest.py."""

import os
import sys

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki import keys
from ansible_collections.mtls.rollout.plugins.module_utils.pki.store import Store

# pytest puts this directory on sys.path for pkitest; `ansible-test units` imports conftest files as
# modules of the collection package instead, so it is put there by hand for both.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pkitest import make_ca  # noqa: E402


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "pki"))


@pytest.fixture
def pki(store):
    """root -> int (EC P-256): the usual issuing setup."""
    make_ca(store, "root")
    make_ca(store, "int", "root")
    return store


@pytest.fixture
def deep_pki(store):
    """root -> int1 -> int2, with int1's key encrypted (passphrase 'int1-pass')."""
    make_ca(store, "root", path_length=2)
    make_ca(store, "int1", "root", passphrase="int1-pass", path_length=1)
    make_ca(store, "int2", "int1", issuer_passphrase="int1-pass", path_length=0)
    return store


@pytest.fixture(scope="session")
def rsa4096_key():
    """RSA 4096 generation is slow: made once for the whole run."""
    return keys.generate(keys.key_spec("rsa", 4096))
