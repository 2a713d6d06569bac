"""The ``cryptography`` dependency, imported the way community.crypto does it.

module_utils put their imports of cryptography in ``try: ... except ImportError: record_missing()`` so that
they import without it (ansible-test's ``import`` sanity test runs where it is absent); a module that needs
it fails with ``missing_required_lib('cryptography')`` when ``import_error()`` is not None. No Ansible
imports: the PKI engine and the probe use it alike."""

import traceback

_ERRORS = []


def record_missing():
    """Record the ImportError being handled (call it in an ``except ImportError:`` block)."""
    _ERRORS.append(traceback.format_exc())


def import_error():
    """The traceback of the first failed import of cryptography, or None when all of them succeeded."""
    return _ERRORS[0] if _ERRORS else None
