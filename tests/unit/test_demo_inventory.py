"""`make run`'s embedded inventory keeps the demo's trust scoped: its root CA (key unencrypted in the store) is
not added to the machine's trust store."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_demo_does_not_trust_its_root_machine_wide():
    inventory = yaml.safe_load((ROOT / "inventory" / "local.yml").read_text())
    assert inventory["all"]["vars"]["mtls_client_trust_store"] is False
