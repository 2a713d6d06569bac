# mtls.rollout — development tasks. `make help` lists them; docs/development.md explains them.
#
#   make venv     .venv from requirements-dev.txt, and the checkout linked under .cache/collections; instant when up to date
#   make test     system packages, lint, sanity, galaxy-check, docs-check, pytest (unit, integration, e2e), newest-core: THE test command
#   make packages install the system packages of .ci/packages.txt (root, Debian) or fail naming the missing ones
#   make lint     ansible-lint, production profile, over roles/ and playbooks/
#   make sanity   ansible-test sanity on a staged copy of the collection, on Python 3.11, 3.12 and 3.13
#   make units    ansible-test units: the unit tests as ansible-test runs them (its own venv)
#   make integration  ansible-test integration: its target runs the pytest integration tests
#   make newest-core  sanity and one end-to-end file on the newest supported ansible-core (its own venv)
#   make pytest   only the pytest part of `make test`
#   make build    ansible-galaxy collection build into .cache/build/
#   make galaxy-check  galaxy-importer (Galaxy's import checks) on the built tarball: no error, no warning
#   make docs-check  antsibull-docs: lint the plugin, role and extra docs, and build the docsite with Sphinx
#   make run      the main job: ansible-playbook -i inventory/local.yml mtls.rollout.site
#   make undo     remove what `make run` installed (nginx site, client files, trust entry); STORE=1: the PKI store too
#   make clean    remove staged copies, build output and test reports under .cache/

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements.stamp
CACHE := $(ROOT)/.cache

# The checkout, linked where Ansible looks for collections (tests/conftest.py makes the same link).
COLLECTIONS := $(CACHE)/collections
LINK := $(COLLECTIONS)/ansible_collections/mtls/rollout

# ansible-test needs the collection under .../ansible_collections/mtls/rollout as a real directory
# (it resolves symlinks), so sanity, units and integration run on a staged copy of the source files.
SANITY_ROOT ?= $(CACHE)/sanity
SANITY_DIR := $(SANITY_ROOT)/ansible_collections/mtls/rollout
# the ansible-test to run (another ansible-core's: make newest-core)
ANSIBLE_TEST_BIN ?= $(BIN)
SANITY_PYTHONS ?= 3.11 3.12 3.13
UNITS_PYTHON ?= 3.12
# ansible-test looks for pythonX.Y on PATH, where pyenv's shims answer only for its selected version:
# .cache/pythons links each version's interpreter from ~/.pyenv/versions (or PATH).
PYTHONS_DIR := $(CACHE)/pythons

# ansible-core 2.19 (the venv's) is the oldest the collection supports (meta/runtime.yml); the newest gets a
# venv of its own, on the Python it needs, from .ci/requirements-newest-core.txt.
NEWEST_CORE_PYTHON ?= 3.12
NEWEST_CORE_VENV := $(CACHE)/core-newest
NEWEST_CORE_E2E ?= tests/e2e/test_nginx_fleet.py \
  tests/integration/test_modules_playbook.py::test_playbook_idempotent_check_diff_reissue_and_no_secrets \
  tests/integration/test_in_process.py tests/unit/test_run_module.py
# Sanity covers the whole collection, the Python under tests/ included; `make sanity SANITY_EXCLUDE=tests/`
# leaves it out.
SANITY_EXCLUDE ?=
BUILD_DIR := $(CACHE)/build
BUILD_STAGE := $(CACHE)/build-stage/ansible_collections/mtls/rollout

# Unit tests are pure and run on PYTEST_WORKERS processes (pytest-xdist); integration and e2e tests
# (ansible-playbook runs, network namespaces, sshd, nginx) run after them, one at a time.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
INTEGRATION_ARGS ?=
PYTEST_OUT := $(CACHE)/pytest

INVENTORY ?= inventory/local.yml
PLAYBOOK ?= mtls.rollout.site

# A skipped test is a failed test (tests/no_skips.py), and a missing system package fails `make test`;
# `make test ALLOW_SKIPS=1` (or MTLS_ALLOW_SKIPS=1 in the environment) runs what this machine can, on purpose.
ALLOW_SKIPS ?=
ifeq ($(ALLOW_SKIPS),1)
export MTLS_ALLOW_SKIPS := 1
endif

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv link packages test lint sanity units integration newest-core ansible-test-stage pythons galaxy-check docs-check pytest build run undo clean

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP) link

# requirements-dev.txt: the pinned development tools (it includes the runtime requirements.txt's packages)
$(STAMP): $(ROOT)/requirements-dev.txt $(ROOT)/requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(ROOT)/requirements-dev.txt -r $(ROOT)/requirements.txt
	@touch $@

link:
	@if [ "$$(readlink $(LINK) 2>/dev/null)" != "$(ROOT)" ]; then \
	  mkdir -p $(dir $(LINK)) && rm -f $(LINK) && ln -s $(ROOT) $(LINK) && echo "linked $(LINK) -> $(ROOT)"; \
	fi

packages:
	@$(ROOT)/.ci/system-packages ensure

# Missing system packages stop it first. Then every step runs even when an earlier one fails, so one run
# reports all failures; the exit status is non-zero when any failed.
test: venv
	@$(MAKE) packages
	@failed=""; \
	$(MAKE) lint || failed="$$failed lint"; \
	$(MAKE) sanity || failed="$$failed sanity"; \
	$(MAKE) galaxy-check || failed="$$failed galaxy-check"; \
	$(MAKE) docs-check || failed="$$failed docs-check"; \
	$(MAKE) pytest || failed="$$failed pytest"; \
	$(MAKE) newest-core || failed="$$failed newest-core"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi

lint: venv
	@echo "== ansible-lint (profile production)"
	@cd $(ROOT) && dirs=$$(for d in roles playbooks; do [ -n "$$(ls -A $$d 2>/dev/null)" ] && echo $$d; done; true); \
	if [ -z "$$dirs" ]; then echo "nothing to lint yet (roles/ and playbooks/ are empty)"; exit 0; fi; \
	ansible-lint --profile production $$([ -t 1 ] || echo --nocolor) $$dirs

# The staged copy, and what ansible-test needs to make its virtualenvs on this machine.
ansible-test-stage: venv
	@$(ROOT)/.ci/stage-collection $(SANITY_DIR)
	@# ansible-test lists files with git; a repository of its own keeps it from using the checkout's .gitignore
	@test -d $(SANITY_DIR)/.git || git -C $(SANITY_DIR) init --quiet
	@# --venv makes its virtualenvs without pip, then fetches a pip bootstrap script from a host this
	@# machine cannot reach; the stand-in in .ci/ does the same with ensurepip + PyPI.
	@pip_version=$$($(ANSIBLE_TEST_BIN)/python -c 'import re, ansible_test, os; p = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py"); print(re.search(r"pip=.([0-9.]+).", open(p).read()).group(1))'); \
	cache=$$HOME/.ansible/test/cache/get_pip_$${pip_version//./_}.py; \
	if [ ! -f "$$cache" ] || grep -q 'mtls.rollout marker' "$$cache"; then \
	  mkdir -p "$$(dirname "$$cache")" && cp $(ROOT)/.ci/ansible_test_get_pip.py "$$cache"; fi

pythons:
	@mkdir -p $(PYTHONS_DIR); for v in $(sort $(SANITY_PYTHONS) $(UNITS_PYTHON)); do \
	  p=$$(ls -d $(HOME)/.pyenv/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V | tail -n 1); \
	  [ -n "$$p" ] || p=$$(command -v python$$v || true); \
	  if [ -z "$$p" ] || ! "$$p" -c 'import venv' 2>/dev/null; then \
	    echo "Python $$v not found (pyenv install $$v, or python$$v on PATH)" >&2; exit 1; fi; \
	  ln -sfn "$$p" $(PYTHONS_DIR)/python$$v; done

# Every Python of SANITY_PYTHONS runs, even after one fails; the status is non-zero when any failed.
sanity: ansible-test-stage pythons
	@failed=""; for v in $(SANITY_PYTHONS); do \
	  echo "== ansible-test sanity (Python $$v, --venv, ansible-core $$($(ANSIBLE_TEST_BIN)/python -c 'import ansible.release as r; print(r.__version__)'))"; \
	  ( cd $(SANITY_DIR) && env -u ANSIBLE_COLLECTIONS_PATH PATH=$(PYTHONS_DIR):$$PATH \
	    $(ANSIBLE_TEST_BIN)/ansible-test sanity --venv --python $$v --color no \
	      $(foreach path,$(SANITY_EXCLUDE),--exclude $(path)) 2>&1 \
	    | { grep -v "^WARNING: Location 'file:///opt/pypi" || true; } ) || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "ansible-test sanity failed on Python$$failed" >&2; exit 1; fi

# The same unit tests as `make pytest`, collected and run by ansible-test in a virtualenv of its own
# (pytest from ansible-test, tests/unit/requirements.txt).
units: ansible-test-stage pythons
	@echo "== ansible-test units (Python $(UNITS_PYTHON), --venv)"
	@cd $(SANITY_DIR) && env -u ANSIBLE_COLLECTIONS_PATH PATH=$(PYTHONS_DIR):$$PATH \
	  ansible-test units --venv --python $(UNITS_PYTHON) --color no 2>&1 \
	  | { grep -v "^WARNING: Location 'file:///opt/pypi" || true; }

# ansible-test integration finds one target, tests/integration/targets/pytest_integration, whose
# runme.sh runs the pytest integration tests with the project venv's Python (--local).
integration: ansible-test-stage
	@echo "== ansible-test integration (--local)"
	@cd $(SANITY_DIR) && env -u ANSIBLE_COLLECTIONS_PATH ansible-test integration --local --color no $(INTEGRATION_ARGS)

# Sanity and one end-to-end file (plus the modules' playbook test) on the newest supported ansible-core.
newest-core: pythons
	@test -x $(NEWEST_CORE_VENV)/bin/python || $(PYTHONS_DIR)/python$(NEWEST_CORE_PYTHON) -m venv $(NEWEST_CORE_VENV)
	@cmp -s $(ROOT)/.ci/requirements-newest-core.txt $(NEWEST_CORE_VENV)/.requirements 2>/dev/null || { \
	  $(NEWEST_CORE_VENV)/bin/python -m pip install --quiet -r $(ROOT)/.ci/requirements-newest-core.txt 2>&1 \
	  | { grep -v "^WARNING: Location 'file:///opt/pypi" || true; } \
	  && cp $(ROOT)/.ci/requirements-newest-core.txt $(NEWEST_CORE_VENV)/.requirements; }
	@status=0; \
	$(MAKE) sanity ANSIBLE_TEST_BIN=$(NEWEST_CORE_VENV)/bin SANITY_ROOT=$(CACHE)/sanity-newest \
	  SANITY_PYTHONS=$(NEWEST_CORE_PYTHON) || status=1; \
	echo "== pytest $(NEWEST_CORE_E2E) on ansible-core $$($(NEWEST_CORE_VENV)/bin/python -c 'import ansible.release as r; print(r.__version__)')"; \
	$(NEWEST_CORE_VENV)/bin/python -m pytest -p no:cacheprovider $(NEWEST_CORE_E2E) \
	  --junitxml=$(PYTEST_OUT)/newest-core.xml $(PYTEST_ARGS) || status=1; \
	exit $$status

# Two pytest runs (parallel unit tests, then the rest one at a time) and one closing line that
# adds them up. pytest exits 5 when it collects nothing, e.g. before the first unit test exists.
pytest: venv
	@cd $(ROOT); mkdir -p $(PYTEST_OUT); rm -f $(PYTEST_OUT)/*.xml; status=0; \
	echo "== pytest tests/unit (-n $(PYTEST_WORKERS))"; \
	python -m pytest tests/unit -n $(PYTEST_WORKERS) --junitxml=$(PYTEST_OUT)/unit.xml $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	serial=$$(for d in tests/integration tests/e2e; do [ -d $$d ] && echo $$d; done; true); \
	echo "== pytest" $$serial "(serial)"; \
	python -m pytest $$serial --junitxml=$(PYTEST_OUT)/serial.xml $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	python $(ROOT)/.ci/junit_total.py $(PYTEST_OUT)/unit.xml $(PYTEST_OUT)/serial.xml || status=1; \
	exit $$status

build: venv
	@rm -rf $(BUILD_DIR) && mkdir -p $(BUILD_DIR)
	@$(ROOT)/.ci/stage-collection $(BUILD_STAGE)
	@cd $(BUILD_STAGE) && ansible-galaxy collection build --force --output-path $(BUILD_DIR) .
	@python $(ROOT)/.ci/check_tarball.py $(BUILD_DIR)/mtls-rollout-*.tar.gz

# galaxy-importer logs its findings as "WARNING: ..." / "ERROR: ..." lines; any of them fails the check,
# except the pending ones .ci/galaxy-importer.allow names (each with its reason).
galaxy-check: build
	@echo "== galaxy-importer (.ci/galaxy-importer.cfg)"
	@cd $(BUILD_DIR) && GALAXY_IMPORTER_CONFIG=$(ROOT)/.ci/galaxy-importer.cfg \
	  python -m galaxy_importer.main $(BUILD_DIR)/mtls-rollout-*.tar.gz >galaxy-importer.log 2>&1 \
	  || { cat galaxy-importer.log; echo "galaxy-importer failed" >&2; exit 1; }
	@cd $(BUILD_DIR) && grep -E '^(WARNING|ERROR)' galaxy-importer.log >galaxy-importer.findings || true; \
	allowed=$$(grep -cEf <(grep -v '^#' $(ROOT)/.ci/galaxy-importer.allow) galaxy-importer.findings || true); \
	if grep -vEf <(grep -v '^#' $(ROOT)/.ci/galaxy-importer.allow) galaxy-importer.findings; then \
	  echo "galaxy-importer: findings above (full log: $(BUILD_DIR)/galaxy-importer.log)" >&2; exit 1; fi; \
	if [ "$${allowed:-0}" -gt 0 ]; then echo "galaxy-importer: no findings beyond $$allowed pending ones that .ci/galaxy-importer.allow names"; \
	else echo "galaxy-importer: 0 errors, 0 warnings"; fi

# the collection as installed (the link under .cache/collections), as antsibull-docs finds it
docs-check: venv
	@$(ROOT)/.ci/docs-check $(LINK)

define RUN_NOTICE
make run will, on this machine:
  - install nginx (apt) and serve the demo on :8443 (/etc/nginx/conf.d/mtls-rollout.conf, /etc/nginx/mtls/)
  - write a client identity to /etc/mtls/client/
  - keep the CA hierarchy in ~/.local/share/mtls-rollout/pki (CA keys unencrypted unless MTLS_CA_PASSPHRASE is set)
  - trust nothing machine-wide: the demo root stays out of the system trust store (curl --cacert)
`make undo` removes it again (`make undo STORE=1`: the store too).
endef
export RUN_NOTICE

run: venv
	@echo "$$RUN_NOTICE"
	cd $(ROOT) && ansible-playbook -i $(INVENTORY) $(PLAYBOOK)

STORE ?=
undo: venv
	cd $(ROOT) && ansible-playbook -i $(INVENTORY) mtls.rollout.uninstall $(if $(filter 1,$(STORE)),-e mtls_uninstall_store=true)

clean:
	rm -rf $(CACHE)/sanity $(CACHE)/sanity-newest $(CACHE)/build $(CACHE)/build-stage $(PYTEST_OUT) $(ROOT)/tests/output
