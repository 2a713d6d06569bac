#!/usr/bin/env bash
# `ansible-test integration` runs this target: the collection's integration tests are pytest files in
# tests/integration/ (modules by FQCN, from a built tarball and as ansible-playbook runs them), so the
# target runs them with the Python ansible-test runs under (make integration: --local, the project venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../../.." && pwd)
cd "$root"
exec python -m pytest -p no:cacheprovider tests/integration "$@"
