"""Cross-certificates for a root rotation: one CA's name and key, certified by another CA of the store.

During a root rotation, the new root's key certified by the old root (``ca/<new>/cross-<old>.pem``) lets a
client that trusts only the old root validate a server that serves ``leaf, intermediate, cross``: the chain
runs leaf -> intermediate -> new root's name (the cross) -> old root. A client that trusts the new root stops at
its own anchor, which has the same name and key. The reverse cross (the old root certified by the new) does the
same for new-only clients facing leaves still under the old root.

A cross-certificate carries the subject CA's name, public key, key identifier, path length and name constraints;
it never outlives its signer nor the subject CA, and is issued again only for a reason, like every certificate.
"""

from ..cryptography_dep import record_missing
from . import build, issuance, pem, renewal
from .authority import Authority
from .errors import PkiError
from .store import PUBLIC_MODE
from .verify import signed_by

try:
    from cryptography import x509
except ImportError:  # modules fail with missing_required_lib('cryptography'): see cryptography_dep
    record_missing()


def path(store, subject_name, signer_name):
    return store.ca_path(subject_name, f"cross-{signer_name}.pem")


def cross_certificate(subject_cert, signer_cert, signer_key, serial, now):
    """``subject_cert``'s name and key, issued by ``signer_cert`` (never beyond either's expiry)."""
    not_before = now - issuance.BACKDATE
    not_after = min(subject_cert.not_valid_after_utc, signer_cert.not_valid_after_utc)
    bc = subject_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    ski = subject_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    signer_ski = signer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder().subject_name(subject_cert.subject).issuer_name(signer_cert.subject)
               .public_key(subject_cert.public_key()).serial_number(serial)
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(ski, critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(signer_ski), critical=False)
               .add_extension(x509.BasicConstraints(ca=True, path_length=bc.path_length), critical=True)
               .add_extension(build.key_usage(cert_sign=True), critical=True))
    try:
        nc = subject_cert.extensions.get_extension_for_class(x509.NameConstraints)
        builder = builder.add_extension(nc.value, critical=nc.critical)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(signer_key, build.signature_hash(signer_key))


def reasons(current, subject_cert, signer_cert, now):
    """Why the cross-certificate ``current`` (or None) must be issued again; empty when it is current."""
    if current is None:
        return ["missing"]
    found = []
    if current.subject != subject_cert.subject or pem.ski(current) != pem.ski(subject_cert) or \
            current.public_key() != subject_cert.public_key():
        found.append("subject_changed")
    if renewal.issuer_changed(current, signer_cert) or not signed_by(current, signer_cert):
        found.append("issuer_changed")
    due = renewal.due(current, None, now)
    if due:
        found.append(due)
    return found


def ensure_cross(store, subject_name, signer_name, signer_passphrase=None, force=False, check=False, now=None):
    """Make ``ca/<subject>/cross-<signer>.pem`` current; returns {name, signer, path, changed, reasons, ...facts}."""
    now = now or pem.utcnow()
    if subject_name == signer_name:
        raise PkiError(f"a CA cannot cross-certify itself ({subject_name!r}): name the other root", "invalid")
    with store.lock(create=not check):
        index = store.load_index()
        subject, signer = Authority(store, subject_name), Authority(store, signer_name, signer_passphrase)
        target = path(store, subject_name, signer_name)
        data = store.read(target)
        try:
            current = pem.load_cert(data, target) if data is not None else None
            why = reasons(current, subject.cert, signer.cert, now)
        except PkiError:
            current, why = None, ["unreadable"]
        if force:
            why.append("forced")
        result = {"name": subject_name, "signer": signer_name, "path": target, "changed": bool(why),
                  "reasons": why, "reason": "; ".join(why)}
        if not why or check:
            if current is not None and not why:
                result.update(pem.facts(current, now))
            return result
        signer.require_usable(now)
        cert = cross_certificate(subject.cert, signer.cert, signer.key, issuance.serial(index, signer_name), now)
        index.add(issuance.record("cross", f"{subject_name}@{signer_name}", signer_name, cert, reason="; ".join(why),
                                  now=now))
        txn = store.transaction()
        txn.write(target, pem.to_pem(cert), PUBLIC_MODE)
        txn.write(store.index_path, index.dumps(), 0o600)
        txn.commit()
        result.update(pem.facts(cert, now))
        return result
