"""Every module_util imports where the cryptography library is absent (what ansible-test's `import` sanity test
needs), and records that it is missing, so that the modules can fail with missing_required_lib."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = ROOT / "plugins" / "module_utils"

# A child Python whose every import of cryptography fails, as on a host without it.
IMPORT_ALL = '''
import importlib, json, sys
class NoCryptography:
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, NoCryptography())
sys.path.insert(0, sys.argv[1])
failed = {}
for name in sys.argv[2:]:
    try:
        importlib.import_module("ansible_collections.mtls.rollout.plugins.module_utils." + name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
from ansible_collections.mtls.rollout.plugins.module_utils import cryptography_dep
print(json.dumps({"failed": failed, "import_error": cryptography_dep.import_error()}))
'''


def test_every_module_util_imports_without_cryptography_and_records_it():
    names = sorted(".".join(p.relative_to(MODULE_UTILS).with_suffix("").parts)
                   for p in MODULE_UTILS.rglob("*.py") if p.name != "__init__.py")
    assert "pki.build" in names and "probe.connect" in names
    collections = ROOT / ".cache" / "collections"
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(collections), *names],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["failed"] == {}, "guard the cryptography imports (see module_utils/cryptography_dep.py)"
    assert "No module named 'cryptography" in result["import_error"]
