"""The backend a module's ``backend`` and ``openbao`` options choose (the only place that looks at the name)."""

from ..errors import PkiError
from .local import LocalBackend

CLIENT_OPTIONS = ("addr", "token", "role_id", "secret_id", "ca_cert", "insecure", "namespace", "mount_prefix")


def backend(store, name="local", openbao=None):
    """A ``base.Backend`` over ``store``; its ``warnings`` (e.g. TLS verification off) for the module to show."""
    if name == "local":
        chosen = LocalBackend(store)
        chosen.warnings = []
        return chosen
    if name != "openbao":
        raise PkiError(f"unknown backend {name!r}: use 'local' (the store) or 'openbao'", "config")
    from .openbao import OpenBaoBackend  # imported when chosen: every run of a local store is spared it
    from .openbao_http import Client, OpenBaoError
    options = {k: v for k, v in (openbao or {}).items() if k in CLIENT_OPTIONS and v not in (None, "", [])}
    if not options.get("addr"):
        raise PkiError("backend openbao needs openbao.addr (mtls_openbao_addr): the URL of OpenBao or a list of its "
                       "cluster nodes, e.g. https://bao.example.com:8200", "config")
    try:
        client = Client(**options)
    except OpenBaoError as e:
        raise PkiError(str(e), e.code) from None
    chosen = OpenBaoBackend(client, store)
    chosen.warnings = list(client.warnings)
    return chosen
