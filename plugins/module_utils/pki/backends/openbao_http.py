"""A small OpenBao / HashiCorp Vault HTTP API client on the standard library (no hvac, no requests).

- One URL or a list of cluster node URLs; requests go to the node that answered last and move on to the
  next node (or the active node a standby redirects to), with exponential backoff between rounds, for up
  to ``retry_seconds``, on connection errors, 5xx, sealed nodes and standby answers (307, 429, 472, 473).
  A request that may have reached OpenBao (the connection dropped after it was sent, or
  a 5xx other than "sealed"/"no active node") is retried only when it is idempotent; otherwise the error
  says ``maybe_done`` so a caller that signs certificates can report "may have been issued".
- TLS is verified against ``ca_cert`` (a PEM file) or the system store. Only ``insecure=True`` turns
  verification off, and that is said in ``warnings``.
- Auth: a token (given, else ``BAO_TOKEN`` / ``VAULT_TOKEN``), or AppRole (``role_id`` + ``secret_id``
  -> ``auth/<approle_mount>/login``; on a 403 the token is obtained again, once per request).
- A bounded pool of keep-alive connections: at most ``pool_size`` connections are open at any time
  (``connections_opened`` counts every connection ever opened).
Tokens and secret_ids never appear in exceptions, reprs or logs.
"""

import http.client
import json
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from ..errors import PkiError

log = logging.getLogger(__name__)

STANDBY = (429, 472, 473)  # standby / performance standby / DR secondary: the request was not handled
REDIRECT = (307,)  # a standby that does not forward redirects to the active node
NOT_HANDLED_5XX = ("vault is sealed", "local node not active", "no active", "standby", "node not active")
IDLE_SECONDS = 30.0  # reuse an idle connection at most this long (OpenBao closes idle ones after 5 min)


class OpenBaoError(PkiError):
    """Every failure of the client (a ``PkiError``): ``code`` names the kind, the message names the node and what to do.

    ``maybe_done``: the request reached OpenBao and may have taken effect (e.g. a certificate issued).
    """

    def __init__(self, message, code, node=None, status=None, maybe_done=False, errors=()):
        super().__init__(message, code)
        self.node, self.status, self.maybe_done, self.errors = node, status, maybe_done, list(errors)


class _Conn:
    def __init__(self, node, conn):
        self.node, self.conn, self.used, self.idle_since = node, conn, False, time.monotonic()

    def stale(self):
        """Idle too long, or the server already closed it (readable with nothing to read = EOF)."""
        if time.monotonic() - self.idle_since > IDLE_SECONDS:
            return True
        sock = self.conn.sock
        if sock is None:
            return True
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True


class Client:
    def __init__(self, addr, token=None, role_id=None, secret_id=None, ca_cert=None, insecure=False,
                 namespace=None, mount_prefix="", approle_mount="approle", pool_size=8, timeout=30.0,
                 retry_seconds=30.0, backoff=0.25, max_backoff=4.0):
        nodes = [addr] if isinstance(addr, str) else list(addr or [])
        if not nodes:
            raise OpenBaoError("no OpenBao address given: set the address (e.g. https://bao.example.com:8200) "
                               "or a list of cluster node addresses", "config")
        self.nodes = [self._node(n) for n in nodes]
        self.namespace, self.mount_prefix, self.approle_mount = namespace, mount_prefix or "", approle_mount
        self.pool_size, self.timeout = max(1, int(pool_size)), timeout
        self.retry_seconds, self.backoff, self.max_backoff = retry_seconds, backoff, max_backoff
        self.warnings = []
        self._tls = self._tls_context(ca_cert, insecure)
        if role_id or secret_id:
            if not (role_id and secret_id):
                raise OpenBaoError("AppRole auth needs both role_id and secret_id", "config")
            self._approle, self._token = (role_id, secret_id), None
        else:
            self._approle = None
            self._token = token or os.environ.get("BAO_TOKEN") or os.environ.get("VAULT_TOKEN")
            if not self._token:
                raise OpenBaoError("no OpenBao token: give a token, set BAO_TOKEN (or VAULT_TOKEN), or use AppRole "
                                   "(role_id and secret_id)", "config")
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._idle, self._open, self._preferred = [], 0, 0
        self.connections_opened = 0

    def __repr__(self):
        auth = "approle" if self._approle else "token"
        return f"Client(nodes={[n[3] for n in self.nodes]!r}, auth={auth}, namespace={self.namespace!r})"

    # ---- configuration ----------------------------------------------------------------------------
    @staticmethod
    def _node(url):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpenBaoError(f"invalid OpenBao address {url!r}: expected http(s)://host[:port]", "config")
        return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), url.rstrip("/")

    def _tls_context(self, ca_cert, insecure):
        if any(n[0] == "http" and n[1] not in ("127.0.0.1", "localhost", "::1") for n in self.nodes):
            self.warnings.append("OpenBao is addressed over plain http to a non-loopback host: tokens and "
                                 "certificates travel unencrypted; use https")
        if insecure:
            self.warnings.append("TLS certificate verification of OpenBao is OFF (insecure=true): anyone on the "
                                 "path can impersonate OpenBao; give ca_cert instead")
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            return ctx
        if ca_cert and not os.path.isfile(ca_cert):
            raise OpenBaoError(f"ca_cert {ca_cert!r} is not a readable file: give the PEM file of the CA that "
                               f"issued OpenBao's TLS certificate", "config")
        if not ca_cert and all(n[0] == "http" for n in self.nodes):
            return None  # no TLS to set up (loading the system's CA store takes tens of milliseconds)
        try:
            return ssl.create_default_context(cafile=ca_cert or None)
        except ssl.SSLError as e:
            raise OpenBaoError(f"ca_cert {ca_cert!r} holds no usable PEM CA certificate ({e.reason})",
                               "config") from None

    def mount(self, ca_name):
        return f"{self.mount_prefix}{ca_name}"

    # ---- the connection pool ----------------------------------------------------------------------
    def _checkout(self, node):
        with self._free:
            while True:
                while self._idle:
                    c = self._idle.pop()
                    if c.node == node and not c.stale():
                        return c
                    c.conn.close()
                    self._open -= 1
                if self._open < self.pool_size:
                    self._open += 1
                    self.connections_opened += 1
                    break
                self._free.wait()
        scheme, host, port, _url = node
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return _Conn(node, conn)

    def _checkin(self, c, reusable):
        with self._free:
            if reusable:
                c.used, c.idle_since = True, time.monotonic()
                self._idle.append(c)
            else:
                c.conn.close()
                self._open -= 1
            self._free.notify()

    def close(self):
        with self._free:
            for c in self._idle:
                c.conn.close()
            self._open -= len(self._idle)
            self._idle = []

    # ---- requests -----------------------------------------------------------------------------------
    def read(self, path, missing_ok=False):
        return self.request("GET", path, missing_ok=missing_ok)

    def list(self, path):
        body = self.request("LIST", path, missing_ok=True)
        return (body or {}).get("data", {}).get("keys", [])

    def write(self, path, data=None, idempotent=True):
        return self.request("POST", path, data or {}, idempotent=idempotent)

    def patch(self, path, data):
        return self.request("PATCH", path, data)

    def raw(self, path):
        """The body of an unauthenticated-style GET (e.g. ``<mount>/crl/pem``) as bytes."""
        return self.request("GET", path, raw=True)

    def request(self, method, path, data=None, idempotent=True, missing_ok=False, raw=False, auth=True):
        """The decoded JSON answer (None for 204, or for 404 with ``missing_ok``); raises OpenBaoError."""
        path = path.lstrip("/")
        if auth and self._approle and self._token is None:
            self._login()
        relogged, failures = False, []
        at, deadline, attempt = self._preferred, time.monotonic() + self.retry_seconds, -1
        while attempt < 0 or time.monotonic() < deadline:
            attempt += 1
            if failures:
                log.debug("%s; trying again", failures[-1])
            node = self.nodes[at % len(self.nodes)]
            at += 1
            if attempt and attempt % len(self.nodes) == 0:  # a full round failed: back off, then go round again
                pause = min(self.max_backoff, self.backoff * 2 ** (attempt // len(self.nodes) - 1))
                time.sleep(min(pause * random.uniform(0.8, 1.2), max(0.0, deadline - time.monotonic())))
            token = self._token if auth else None
            try:
                status, body = self._send(node, method, path, data, token, raw)
            except _Uncertain as e:
                if not idempotent:
                    raise e.error from None
                failures.append(e.error)
                continue
            except _Unsent as e:
                failures.append(e.error)
                continue
            if status in REDIRECT:  # a standby names the active node: go there next (nothing was done)
                failures.append(self._error(node, method, path, status, body))
                at = next((i for i, n in enumerate(self.nodes) if body["location"].startswith(n[3] + "/")), at)
                continue
            if status < 300 or (status == 404 and missing_ok and not _no_route(body)):
                self._preferred = self.nodes.index(node)
                return None if status == 404 else body
            error = self._error(node, method, path, status, body)
            if status in STANDBY or (status >= 500 and _not_handled(body)):
                failures.append(error)
                continue
            if status >= 500:
                if not idempotent:
                    error.maybe_done = True
                    error.args = (error.args[0] + "; the request may have taken effect",)
                    raise error
                failures.append(error)
                continue
            if status == 403 and auth and self._approle and not relogged:
                relogged = True
                self._login(stale=token)
                continue
            raise error
        last = failures[-1]
        tried = ", ".join(dict.fromkeys(f.node for f in failures))
        raise OpenBaoError(f"{last} (gave up after {len(failures)} attempts in {self.retry_seconds:g}s on {tried})",
                           last.code, last.node, last.status, last.maybe_done, last.errors)

    def _send(self, node, method, path, data, token, raw=False):
        c = self._checkout(node)
        url = node[3]
        headers = {"Accept": "application/json"}
        if token:
            headers["X-Vault-Token"] = token
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        body = None
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/merge-patch+json" if method == "PATCH" else "application/json"
        sent = False
        try:
            if c.conn.sock is None:
                c.conn.connect()
                # http.client sends headers and body in two writes: without NODELAY, Nagle holds the body
                c.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.conn.request(method, f"/v1/{path}", body=body, headers=headers)
            sent = True
            resp = c.conn.getresponse()
            payload = resp.read()
        except ssl.SSLCertVerificationError as e:
            self._checkin(c, False)
            raise OpenBaoError(f"OpenBao at {url}: its TLS certificate does not verify ({e.verify_message}): give "
                               f"ca_cert (the PEM of the CA that issued it) or fix the address", "tls", url) from None
        except (OSError, http.client.HTTPException) as e:
            self._checkin(c, False)
            what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if not sent and not c.used:  # nothing reached OpenBao
                raise _Unsent(OpenBaoError(f"OpenBao at {url} is unreachable ({what}): check that it runs and "
                                           f"the address and port are right", "unreachable", url)) from None
            raise _Uncertain(OpenBaoError(f"connection to OpenBao at {url} failed after the request {method} "
                                          f"{path} was sent ({what})", "connection_lost", url,
                                          maybe_done=True)) from None
        self._checkin(c, not resp.will_close)
        if resp.status in REDIRECT:
            return resp.status, {"location": resp.getheader("Location") or "", "errors": []}
        if raw and resp.status < 300:
            return resp.status, payload
        try:
            return resp.status, (json.loads(payload) if payload.strip() else None)
        except ValueError:
            return resp.status, {"errors": [payload[:200].decode(errors="replace")]}

    def _error(self, node, method, path, status, body):
        url = node[3]
        errors = [str(e) for e in ((body or {}).get("errors") or [])]
        text = "; ".join(" ".join(e.split()) for e in errors) or "no error text"
        if status == 503 and "sealed" in text.lower():
            return OpenBaoError(f"OpenBao at {url} is sealed: unseal it (bao operator unseal) or configure "
                                f"auto-unseal", "sealed", url, status, errors=errors)
        if status == 403:
            how = ("the AppRole's policy: it does not grant this path (a fresh AppRole login was denied too)"
                   if self._approle else
                   "the token (BAO_TOKEN/VAULT_TOKEN or the token option): it is wrong, expired or revoked, or "
                   "its policy lacks this capability")
            return OpenBaoError(f"OpenBao at {url} denied {method} {path} (403 permission denied): check {how}",
                                "permission_denied", url, status, errors=errors)
        if status in (400, 404) and _no_route(body):
            return OpenBaoError(f"OpenBao at {url} has no secrets engine mounted for {path!r} ({text}): create the "
                                f"CA first (mtls.rollout.ca), or fix the mount prefix or namespace", "missing_mount",
                                url, status, errors=errors)
        if status in STANDBY or status in REDIRECT:
            return OpenBaoError(f"OpenBao at {url} is a standby and did not handle {method} {path} ({status}): "
                                f"list the active node's address too, or check the cluster's leader election",
                                "standby", url, status, errors=errors)
        if status >= 500:
            return OpenBaoError(f"OpenBao at {url} failed {method} {path} with {status} ({text}): check the server's "
                                f"log and health (bao status)", "server_error", url, status, errors=errors)
        return OpenBaoError(f"OpenBao at {url} rejected {method} {path} ({status}): {text}", "rejected", url, status,
                            errors=errors)

    def _login(self, stale=None):
        with self._auth_lock:
            if self._token is not None and self._token != stale:
                return  # another thread logged in already
            role_id, secret_id = self._approle
            self._token = None
            try:
                body = self.request("POST", f"auth/{self.approle_mount}/login",
                                    {"role_id": role_id, "secret_id": secret_id}, auth=False)
            except OpenBaoError as e:
                if e.code in ("permission_denied", "rejected"):
                    raise OpenBaoError(f"AppRole login at {e.node} failed ({e.status}): check role_id and secret_id "
                                       f"(the secret_id may be expired or used up)", "permission_denied", e.node,
                                       e.status) from None
                raise
            self._token = body["auth"]["client_token"]


class _Unsent(Exception):
    def __init__(self, error):
        self.error = error


class _Uncertain(Exception):
    def __init__(self, error):
        self.error = error


def _no_route(body):
    text = " ".join((body or {}).get("errors") or []).lower()
    return "no handler for route" in text or "no secret engine mount" in text


def _not_handled(body):
    text = " ".join((body or {}).get("errors") or []).lower()
    return any(t in text for t in NOT_HANDLED_5XX)
