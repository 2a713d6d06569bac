"""Issue 14, item 3: canary rollouts with automatic rollback. Servers go in batches (mtls_rollout_batches); after
each batch a gate proves every server of it with real handshakes; a failing server gets its previous files back
(the generation kept on the host), nginx is reloaded, the run stops and names the host, the check and the cause,
and servers of later batches are not touched."""

import subprocess

import pytest
import yaml

from tests.e2e.helpers import recap, run_playbook

SITE = "mtls.rollout.site"
SERVERS = [1, 2, 3]
BATCHES = {"mtls_rollout_batches": [1, "100%"]}
GENERATION = "/etc/nginx/mtls/.previous/generation.json"
pytestmark = pytest.mark.usefixtures("ansible_ok")


@pytest.fixture(scope="module")
def fleet(make_module_fleet):
    return make_module_fleet("cny", hosts=3, groups={"mtls_servers": SERVERS})


@pytest.fixture(scope="module")
def site_vars(tmp_path_factory):
    return {"mtls_pki_dir": str(tmp_path_factory.mktemp("pki")), "mtls_nginx_install": False, **BATCHES}


def served_serial(ip):
    out = subprocess.run(f"openssl s_client -connect {ip}:443 </dev/null 2>/dev/null | openssl x509 -noout -serial",
                         shell=True, capture_output=True, text=True, timeout=30, check=False).stdout
    return out.strip().split("=")[-1].lower().lstrip("0")


def broken_inventory(fleet, tmp_path_factory):
    """Server 1 (the first batch) proxies to a backend that is not there: nginx -t passes, requests get 502."""
    with open(fleet.inventory) as f:
        data = yaml.safe_load(f)
    data["all"]["hosts"][fleet.host(1).name]["mtls_nginx_backend"] = "http://127.0.0.1:9"
    path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def first(fleet, site_vars):
    return run_playbook(SITE, fleet.inventory, site_vars)[1]


def test_batches_pass_their_gates_and_keep_no_generation(first, fleet):
    assert "Gate: a client identity of the fleet gets 200" in first
    for i in SERVERS:
        assert recap(first)[fleet.host(i).name]["failed"] == 0
        assert fleet.run(i, ["test", "-e", GENERATION]).returncode != 0  # confirmed, nothing kept


def test_a_failed_gate_rolls_the_batch_back_and_stops(first, fleet, site_vars, tmp_path_factory):
    before = {i: served_serial(fleet.host(i).ip) for i in SERVERS}
    conf = {i: fleet.run(i, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout for i in SERVERS}
    forced = {**site_vars, "mtls_server_defaults": {"force": True}}
    rc, out = run_playbook(SITE, broken_inventory(fleet, tmp_path_factory), forced, check=False)
    assert rc != 0
    first_host = fleet.host(1).name
    assert f"canary gate failed on {first_host}: Gate: a client identity of the fleet gets 200" in out, out[-3000:]
    assert "backend" in out[out.find("canary gate failed"):][:1500]  # the probe's diagnosis names the cause
    for i in SERVERS:  # server 1 is back on its previous files; the later batch never changed
        assert served_serial(fleet.host(i).ip) == before[i], fleet.host(i).name
        assert fleet.run(i, ["cat", "/etc/nginx/conf.d/mtls-rollout.conf"]).stdout == conf[i]
        assert fleet.run(i, ["test", "-e", GENERATION]).returncode != 0
    for i in SERVERS[1:]:
        assert fleet.host(i).name not in recap(out) or recap(out)[fleet.host(i).name]["changed"] == 0


def test_the_next_good_run_rolls_out_everywhere(first, fleet, site_vars):
    out = run_playbook(SITE, fleet.inventory, site_vars)[1]
    issued = {}
    for i in SERVERS:
        name = f"{fleet.host(i).name}-server"
        issued[i] = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in",
                                    f"{site_vars['mtls_pki_dir']}/certs/{name}/cert.pem"],
                                   capture_output=True, text=True, check=False).stdout.strip().split("=")[-1].lower().lstrip("0")
        assert served_serial(fleet.host(i).ip) == issued[i]
