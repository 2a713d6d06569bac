#!/usr/bin/env bash
# `ansible-test integration` runs this target: the collection's integration tests are pytest files in
# tests/integration/ (modules by FQCN, from a built tarball and as ansible-playbook runs them), so the
# target runs them with the Python ansible-test runs under (make integration: --local, the project venv).
set -euo pipefail
# ansible-test runs a copy of this directory under tests/output/.tmp/: the collection root is the
# nearest directory above that holds galaxy.yml
root=$(pwd)
while [ ! -f "$root/galaxy.yml" ]; do
  [ "$root" != / ] || { echo "runme.sh: no galaxy.yml above $(pwd)" >&2; exit 1; }
  root=$(dirname "$root")
done
cd "$root"
exec python -m pytest -p no:cacheprovider tests/integration "$@"
