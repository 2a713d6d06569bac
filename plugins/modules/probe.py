#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: probe
short_description: Connect to a TLS server as a client, report what it presents and explain what is wrong
version_added: 0.1.0
description:
  - Connects to O(host):O(port) (with the SNI name O(server_name), and the client certificate O(client_cert) when
    given) and reports what the server presents - the number of certificates, their subjects, issuers and expiry -,
    whether it asks for a client certificate and which CA names it accepts, the protocol and cipher, and the HTTP
    status of a C(GET) of O(path).
  - Then a RV(diagnosis) - each cause found as a stable code and a sentence that names the fix - for a server that
    sends only its leaf (missing intermediate), a name or IP not in the server certificate's SAN, a client
    certificate from a CA the server does not accept, a client chain deeper than nginx's C(ssl_verify_depth),
    expired or not yet valid certificates (server's and client's), a revoked client (with O(crl_files) or
    O(pki_dir)), a certificate without the right extended key usage (a server certificate used as a client), a
    missing client certificate, a server that does not ask for one, and backend errors.
  - nginx answers a rejected client certificate with a bare C(400 The SSL certificate error); the exact OpenSSL
    error is only in its error log. The probe infers the cause from the client certificate itself (issuer against
    the acceptable CA names, validity, key usage, revocation, chain depth) and says when it cannot tell.
  - Uses the Python standard library C(ssl) for the connection and C(cryptography) to read certificates; runs on
    the control node or on any host with Python 3.8+ and C(cryptography) (on Debian, package C(python3-cryptography)).
    The certificates as sent and the acceptable CA names are read from the TLS handshake messages (OpenSSL's
    message callback, which also sees TLS 1.3's encrypted handshake), so no C(openssl s_client) is involved. The
    server's chain is verified against O(ca_file) in a second handshake, by OpenSSL.
  - Never fails because the server is broken unless O(fail_on_problems) is set; read RV(ok) and RV(diagnosis).
author: mtls.rollout maintainers (!UNKNOWN)
extends_documentation_fragment:
  - mtls.rollout.attributes
  - mtls.rollout.attributes.in_process
  - mtls.rollout.requirements.probe
attributes:
  check_mode:
    support: full
    description: Read-only; runs in check mode too.
  diff_mode:
    support: none
    description: Nothing to diff.
options:
  host:
    description: Address or name to connect to (required without O(targets)).
    type: str
  targets:
    description:
      - Probe several servers in one run (for example every server of a play, with C(run_once)), a few at a time,
        instead of O(host). Each item gives its O(host), O(port), O(server_name) and O(ca_file); the other options
        apply to all. Results come back in RV(results); a server that cannot be reached is reported there, in its
        RV(error), and fails the task only with O(fail_on_problems).
    type: list
    elements: dict
    suboptions:
      name:
        description: A label for the item, returned as is in RV(results) (for example the inventory host).
        type: str
      host:
        description: As O(host).
        type: str
        required: true
      port:
        description: As O(port) (default - O(port)).
        type: int
      server_name:
        description: As O(server_name).
        type: str
      ca_file:
        description: As O(ca_file) (default - O(ca_file)).
        type: path
  port:
    description: TCP port.
    type: int
    default: 443
  server_name:
    description: Name sent as SNI and checked against the server certificate's SAN. Default - O(host) (an IP is then
      checked against the SAN's IP addresses, and no SNI is sent).
    type: str
  expect_names:
    description: More names or IP addresses the server certificate must hold in its SAN.
    type: list
    elements: str
    default: []
  ca_file:
    description: Trust anchors (the fleet's root, C(ca.pem)) to verify the server's chain against. Without it the chain
      is reported but not verified.
    type: path
  client_cert:
    description: Client certificate (PEM) to present; certificates after the first are sent as its chain.
    type: path
  client_key:
    description: Key of O(client_cert) (default - in O(client_cert)).
    type: path
  client_key_passphrase:
    description: Passphrase of O(client_key).
    type: str
  client_chain:
    description: Extra intermediates (PEM) of the client certificate, used to work out its chain depth.
    type: path
  crl_files:
    description: CRLs (PEM, several per file allowed) that say whether the client certificate is revoked.
    type: list
    elements: path
    default: []
  pki_dir:
    description: The PKI store (on the host where the probe runs); its C(index.json) says which certificates are revoked.
    type: path
  path:
    description: Path of the HTTP C(GET).
    type: str
    default: /
  http:
    description: Send the HTTP request (V(false) - only the TLS handshake).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the connection and for each read.
    type: float
    default: 10
  expect_client_auth:
    description: Report it as a problem when the server does not ask for a client certificate.
    type: bool
    default: false
  fail_on_problems:
    description: Fail the task, listing the diagnosis, when anything is wrong.
    type: bool
    default: false
seealso:
  - module: mtls.rollout.verify
  - module: mtls.rollout.crl
"""

EXAMPLES = r"""
- name: Probe a server from the control node with a client identity of the store
  mtls.rollout.probe:
    host: 192.0.2.11
    server_name: web1.example.com
    ca_file: /srv/pki/ca/root/cert.pem
    client_cert: /srv/pki/certs/alice/fullchain.pem
    client_key: /srv/pki/certs/alice/key.pem
    pki_dir: /srv/pki
    expect_client_auth: true
  register: probe

- name: Which certificates do these servers present? One run, from the control node
  mtls.rollout.probe:
    targets:
      - {name: web1, host: 192.0.2.11, server_name: web1.example.com}
      - {name: web2, host: 192.0.2.12, server_name: web2.example.com}
    ca_file: /srv/pki/ca/root/cert.pem
    http: false
  run_once: true
  delegate_to: localhost
  register: probes

- name: Say what is wrong
  ansible.builtin.debug:
    msg: "{{ probe.diagnosis | map(attribute='message') }}"
  when: not probe.ok

- name: Probe from a client host with its deployed identity, fail on any problem
  mtls.rollout.probe:
    host: web1.example.com
    ca_file: /etc/mtls/client/ca.pem
    client_cert: /etc/mtls/client/fullchain.pem
    client_key: /etc/mtls/client/key.pem
    fail_on_problems: true
"""

RETURN = r"""
ok:
  description: Whether the diagnosis is empty.
  returned: without O(targets)
  type: bool
diagnosis:
  description: Each cause found, with a stable code and a sentence that says what to do.
  returned: without O(targets)
  type: list
  elements: dict
  sample: [{code: server_missing_intermediate, message: "the server sends only its own certificate, without ..."}]
reachable:
  description: Whether the TCP connection was made.
  returned: without O(targets)
  type: bool
error:
  description: Why the connection or handshake failed, if it did.
  returned: without O(targets)
  type: str
protocol:
  description: Negotiated protocol (V(TLSv1.3), V(TLSv1.2)).
  returned: without O(targets)
  type: str
cipher:
  description: Negotiated cipher suite.
  returned: without O(targets)
  type: str
certificate_count:
  description: Number of certificates the server sent.
  returned: without O(targets)
  type: int
certificates:
  description: The server's certificates as sent (leaf first) - subject, issuer, serial, not_before, not_after,
    days_remaining, is_ca, san_dns, san_ip, eku.
  returned: without O(targets)
  type: list
  elements: dict
verified:
  description: Whether the chain verified against O(ca_file) (null without O(ca_file)).
  returned: without O(targets)
  type: bool
verify_code:
  description: OpenSSL's verification error code (0 when verified).
  returned: without O(targets)
  type: int
verify_message:
  description: OpenSSL's verification message.
  returned: without O(targets)
  type: str
client_auth_requested:
  description:
    - Whether the server asked for a client certificate.
    - Null when the probing Python cannot see the handshake messages (before 3.8, C(ssl) has no message callback);
      with O(expect_client_auth) the diagnosis then says so (V(client_auth_unknown)) instead of guessing.
  returned: without O(targets)
  type: bool
acceptable_ca_names:
  description: Distinguished names of the CAs the server accepts client certificates from (RFC 4514).
  returned: without O(targets)
  type: list
  elements: str
client_certificate:
  description: Facts of the client certificate presented (null when none).
  returned: without O(targets)
  type: dict
client_chain_depth:
  description: Intermediate CAs in the client chain given (what C(ssl_verify_depth) must at least be).
  returned: without O(targets)
  type: int
http_status:
  description: HTTP status of the C(GET) (null when there was no response).
  returned: without O(targets)
  type: int
http_reason:
  description: Reason of the response (for nginx's own error pages, their title, e.g. V(The SSL certificate error)).
  returned: without O(targets)
  type: str
results:
  description: With O(targets), one result per item in their order - its O(targets[].name), O(host), O(port) and
    the results above (RV(ok), RV(certificates), RV(error), ...), which are then not returned at the top level.
  returned: with O(targets)
  type: list
  elements: dict
"""

import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep

try:  # reading certificates needs the cryptography library on the host that probes
    from ansible_collections.mtls.rollout.plugins.module_utils.probe import connect
except ImportError:
    PROBE_IMPORT_ERROR = traceback.format_exc()
else:  # the module_utils import without cryptography and record what failed
    PROBE_IMPORT_ERROR = cryptography_dep.import_error()


def _probe(p, revoked):
    """connect.report() of one server (p: the module's options, or them overlaid with an item of targets)."""
    obs = connect.observe(p["host"], p["port"], p["server_name"], p["ca_file"], p["client_cert"], p["client_key"],
                          p["client_key_passphrase"], p["client_chain"], p["path"], p["timeout"], p["http"],
                          p["expect_names"], p["expect_client_auth"], p["crl_files"], revoked)
    return connect.report(obs)


def _targets(p, revoked):
    """Every item of targets probed, a few at a time; a server that cannot be probed gets ok false and its error."""
    def one(item):
        q = {**p, **{k: v for k, v in item.items() if k != "name" and v is not None}}
        try:
            return {**_probe(q, revoked), "name": item["name"], "host": q["host"], "port": q["port"]}
        except connect.ProbeError as e:
            return {"name": item["name"], "host": q["host"], "port": q["port"], "ok": False, "reachable": False,
                    "error": str(e), "certificates": [], "diagnosis": [{"code": "probe_failed", "message": str(e)}]}
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, p["targets"]))


SPEC = {
    "argument_spec": {
        "host": {"type": "str"},
        "port": {"type": "int", "default": 443},
        "server_name": {"type": "str"},
        "expect_names": {"type": "list", "elements": "str", "default": []},
        "ca_file": {"type": "path"},
        "client_cert": {"type": "path"},
        "client_key": {"type": "path", "no_log": False},
        "client_key_passphrase": {"type": "str", "no_log": True},
        "client_chain": {"type": "path"},
        "crl_files": {"type": "list", "elements": "path", "default": []},
        "pki_dir": {"type": "path"},
        "path": {"type": "str", "default": "/"},
        "http": {"type": "bool", "default": True},
        "timeout": {"type": "float", "default": 10},
        "expect_client_auth": {"type": "bool", "default": False},
        "fail_on_problems": {"type": "bool", "default": False},
        "targets": {"type": "list", "elements": "dict", "options": {
            "name": {"type": "str"},
            "host": {"type": "str", "required": True},
            "port": {"type": "int"},
            "server_name": {"type": "str"},
            "ca_file": {"type": "path"}}},
    },
    "required_one_of": [("host", "targets")],
    "mutually_exclusive": [("host", "targets")],
    "required_by": {"client_key": "client_cert"},
    "supports_check_mode": True,
}


def run(module):
    if PROBE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=PROBE_IMPORT_ERROR)
    p = module.params
    try:
        revoked = connect.revoked_from_index(p["pki_dir"]) if p["pki_dir"] else None
        if p["targets"] is not None:
            results = _targets(p, revoked)
            bad = [r for r in results if not r["ok"]]
            if p["fail_on_problems"] and bad:
                module.fail_json(msg="; ".join(f"{r['host']}:{r['port']}: " + "; ".join(d["message"] for d in r["diagnosis"])
                                               for r in bad), results=results)
            module.exit_json(changed=False, results=results)
        result = _probe(p, revoked)
    except connect.ProbeError as e:
        module.fail_json(msg=str(e))
    if p["fail_on_problems"] and not result["ok"]:
        module.fail_json(msg=f"{p['host']}:{p['port']}: " + "; ".join(d["message"] for d in result["diagnosis"]),
                         **result)
    module.exit_json(changed=False, **result)


def main():
    run(AnsibleModule(**SPEC))


if __name__ == "__main__":
    main()
