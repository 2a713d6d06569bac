"""Recorded verdicts of up-to-date leaves (``verified.json``): a re-run hashes a leaf's files instead of parsing
its key and certificate and re-deriving its chain files and bundle checks (the idempotent re-run of 10,000).

An entry says "the full check found this leaf complete and up to date, given exactly these inputs", with the
certificate's public facts and its renewal window. Its digest covers every input of that check: the engine code
that decides (the source of its modules) and the cryptography version that parses, the issuing CA (certificate,
chain, root), the task's renew_before_days, the spec, the leaf's bundle metadata in the index and the SHA-256 of
each file of the leaf, as read through the store's checks (symlinks, modes) or as written by the run. An entry
is used only when that digest matches; the caller checks the rest on every run (not due yet, no force, the index
knows the serial, the bundle's password matches the index's settings HMAC). Any other change - a byte of a file,
a private file's mode, the spec, the CA, the index, the code - takes the full check, which records again.

Contents, not stat data, are compared: a file replaced by another of the same size with its mtime reset, or
rewritten within one timestamp tick, is seen (a stat cannot see those). The file is a cache: missing, corrupt
or of another version it is ignored (one full run). It holds no secret: no key material, no password (the
spec is hashed without it) - only hashes of files the store holds anyway (0600, like the index).
"""

import dataclasses
import datetime as dt
import hashlib
import json
import os
import sys

from . import pem
from .errors import PkiError
from .store import ABSENT, KEY_MODE, LEAF_FILES, write_cache

VERSION = 1
FACTS = ("serial", "subject", "issuer", "not_before", "not_after", "fingerprint_sha256")
# the modules whose code decides a leaf's verdict: a change to any of them invalidates every entry
CODE = ("authority", "backends.base", "backends.local", "build", "constraints", "ensure_leaves", "issuance", "key_reuse",
        "keys", "pem", "renewal", "specs", "store", "verdicts")


class Verdicts:
    """The entries of ``verified.json`` for one run under the store's lock."""

    def __init__(self, store, context):
        self.store, self.path, self.changed = store, os.path.join(store.root, "verified.json"), False
        self.context = context  # None: no cache (the verdict code could not be read)
        self.entries = self._load() if context else {}

    def _load(self):
        try:
            data = self.store.read(self.path)
            parsed = json.loads(data) if data is not None else {}
        except (PkiError, ValueError):  # a symlink, a bad mode or garbage: ignored, replaced on the next write
            return {}
        entries = parsed.get("leaves") if isinstance(parsed, dict) and parsed.get("version") == VERSION else None
        return entries if isinstance(entries, dict) else {}

    def hit(self, spec, meta, now):
        """The recorded facts of ``spec``'s leaf when its files and inputs are those the full check last found up
        to date and it is not inside its renewal window at ``now``; else None."""
        entry = self.entries.get(spec.name)
        if not isinstance(entry, dict) or not isinstance(entry.get("facts"), dict):
            return None
        try:
            left = (dt.datetime.fromtimestamp(entry["not_after"], dt.timezone.utc) - now).total_seconds() / 86400
            if not left > entry["window"]:  # due (renewal.due), or a malformed entry: the full check decides
                return None
            files = self.store.read_leaf(spec.name, LEAF_FILES)
        except (PkiError, KeyError, TypeError, ValueError, OverflowError, OSError):
            return None  # the full check reads these files again and says what is wrong with them
        hashes = {f: hashlib.sha256(data).hexdigest() if data is not None else ABSENT for f, data in files.items()}
        if entry.get("digest") != self._digest(spec, meta, hashes, entry):
            return None
        now_left = (dt.datetime.fromtimestamp(entry["not_after"], dt.timezone.utc) - pem.utcnow()).total_seconds()
        return dict({k: entry["facts"][k] for k in FACTS}, days_remaining=round(now_left / 86400, 2))  # as pem.facts

    def record(self, spec, meta, hashes, facts, not_after, window):
        """Record that the full check found ``spec``'s leaf up to date with files of these ``hashes``."""
        if not self.context:
            return
        entry = {"facts": {k: facts[k] for k in FACTS}, "not_after": not_after.timestamp(), "window": window}
        entry["digest"] = self._digest(spec, meta, hashes, entry)
        if self.entries.get(spec.name) != entry:
            self.entries[spec.name] = entry
            self.changed = True

    def save(self):
        if self.changed:
            write_cache(self.path, json.dumps({"version": VERSION, "leaves": self.entries}, sort_keys=True).encode(),
                        KEY_MODE)
            self.changed = False

    def _digest(self, spec, meta, hashes, entry):
        """The digest of a verdict's inputs and of what the entry records (an edited entry is not taken)."""
        h = hashlib.sha256(self.context)
        h.update(_spec_key(spec).encode())
        recorded = [entry["facts"].get(k) for k in FACTS] + [entry["not_after"], entry["window"]]
        h.update(repr([sorted(meta.items()) if isinstance(meta, dict) else meta, recorded]).encode())
        for f in LEAF_FILES:
            h.update(f"\0{f}={hashes[f]}".encode())
        return h.hexdigest()


def _spec_key(spec):
    """Every field of the spec, its bundle's password excepted (checked against the index's settings HMAC)."""
    values = [_fields(spec, "pkcs12")]
    if spec.pkcs12 is not None:
        values.append(_fields(spec.pkcs12, "password"))
    return repr(values)


def _fields(obj, excepted):
    names = _FIELDS.get(type(obj))
    if names is None:
        names = _FIELDS[type(obj)] = [f.name for f in dataclasses.fields(obj)]
    return [(n, getattr(obj, n)) for n in names if n != excepted]


_FIELDS = {}


def context(auth_fingerprint, issuer_pems, renew_before_days):
    """What every entry of this run depends on beyond its leaf, as bytes; None when the code cannot be read."""
    h = hashlib.sha256(f"{VERSION}\0{_cryptography_version()}\0{auth_fingerprint}\0{renew_before_days!r}\0".encode())
    for pems in issuer_pems:
        h.update(pems + b"\0")
    for name in CODE:
        module = sys.modules.get(f"{__package__}.{name}")
        try:
            source = module.__loader__.get_source(module.__name__)
        except (AttributeError, ImportError, OSError, ValueError):  # no source: every leaf gets the full check
            source = None
        if not source:
            return None
        h.update((source if isinstance(source, bytes) else source.encode()) + b"\0")  # bytes: Ansible's collection loader
    return h.digest()


def _cryptography_version():
    try:
        import cryptography
        return cryptography.__version__
    except ImportError:
        return "-"
