"""The probe where Python cannot see the TLS handshake (before 3.8: no ``SSLContext._msg_callback``).

A real TLS server (``openssl s_server`` on 127.0.0.1) asks for a client certificate from client-ca.
With the capability the probe sees the request and the CA names; with it removed the probe must say that it
cannot tell, not diagnose ``client_auth_not_requested``. A second test runs the probe's module_utils under a
real Python 3.7 (pyenv) when the machine has one with ``cryptography``.
"""

import json
import os
import socket
import ssl
import subprocess
import time
import types
from pathlib import Path

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.probe import connect
from pkitest import issue, make_ca

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".cache" / "collections"
PYTHON37 = Path(os.environ.get("MTLS_PYTHON37", Path.home() / ".pyenv" / "versions" / "3.7.16" / "bin" / "python3.7"))
PY37_VENV = ROOT / ".cache" / "py37"


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(store):
    """``openssl s_server`` sending its chain and asking for a client certificate from client-ca (CA names
    included); yields (store, port)."""
    make_ca(store, "root")
    make_ca(store, "server-ca", "root")
    make_ca(store, "client-ca", "root")
    issue(store, "server-ca", [{"name": "web1", "dns": ["localhost"], "ip": ["127.0.0.1"]}])
    port = _free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-www", "-quiet", "-verify", "1",
         "-cert", store.leaf_path("web1", "cert.pem"), "-key", store.leaf_path("web1", "key.pem"),
         "-cert_chain", store.leaf_path("web1", "chain.pem"), "-CAfile", store.ca_path("client-ca", "fullchain.pem")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _i in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"openssl s_server did not listen: {proc.stderr.read1().decode()}")
        yield store, port
    finally:
        proc.kill()
        proc.wait()


class _NoMessageCallback(ssl.SSLContext):
    """An SSLContext as Python 3.7 has it: no _msg_callback."""

    @property
    def _msg_callback(self):
        raise AttributeError("_msg_callback")


def test_client_auth_request_is_seen(server):
    _store, port = server
    report = connect.report(connect.observe("127.0.0.1", port, timeout=5, expect_client_auth=True))
    assert report["client_auth_requested"] is True
    assert report["acceptable_ca_names"] == ["CN=client-ca", "CN=root"]
    assert report["certificate_count"] == 2
    assert [d["code"] for d in report["diagnosis"]] == []


def test_without_the_message_callback_the_probe_says_it_cannot_tell(server, monkeypatch):
    _store, port = server
    ssl37 = types.ModuleType("ssl")  # the ssl module as the probe sees it, with Python 3.7's SSLContext
    ssl37.__dict__.update(vars(ssl))
    ssl37.SSLContext = _NoMessageCallback
    monkeypatch.setattr(connect, "ssl", ssl37)
    report = connect.report(connect.observe("127.0.0.1", port, timeout=5, expect_client_auth=True))
    assert report["client_auth_requested"] is None
    codes = [d["code"] for d in report["diagnosis"]]
    assert codes == ["client_auth_unknown"], report["diagnosis"]
    message = report["diagnosis"][0]["message"]
    assert "_msg_callback" in message and "Python 3.8 or later" in message
    assert report["http_status"] == 200  # the rest still works


PROBE_37 = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.mtls.rollout.plugins.module_utils.probe import connect
obs = connect.observe("127.0.0.1", int(sys.argv[2]), timeout=5, expect_client_auth=True)
print(json.dumps(connect.report(obs), default=str))
"""


def _python37_with_cryptography():
    """A Python 3.7 venv (.cache/py37) with cryptography 45.0.7 (the last for 3.7) from the package registry, or None."""
    python = PY37_VENV / "bin" / "python"
    if not python.exists():
        if not PYTHON37.exists():
            return None
        subprocess.run([str(PYTHON37), "-m", "venv", str(PY37_VENV)], check=True, capture_output=True)
    if subprocess.run([str(python), "-c", "import cryptography"], capture_output=True, check=False).returncode:
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "cryptography==45.0.7"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_probe_under_python37(server):
    python = _python37_with_cryptography()
    if python is None:
        pytest.skip(f"no Python 3.7 at {PYTHON37} (MTLS_PYTHON37)")  # a failure unless skips are allowed
    _store, port = server
    done = subprocess.run([str(python), "-c", PROBE_37, str(COLLECTIONS), str(port)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["client_auth_requested"] is None
    assert [d["code"] for d in report["diagnosis"]] == ["client_auth_unknown"]
    assert "Python 3.7" in report["diagnosis"][0]["message"]
