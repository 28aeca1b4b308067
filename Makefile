# edgepbx developer entry points. `make help` lists them.
#
#   make run     start the agent on the demo site (agent/demo/site.yaml), state in ./var
#   make test    Debian peers + venv + lint + the whole pytest suite (what CI runs)
#   make lint    ruff, mypy (strict on sipstack/ and dialplan/), import layering
#   make bench   benchmarks against the anchors (Kamailio, sippy, tftpd-hpa), printing figures and ratios
#   make deps    the Debian packages the tests need (root only; fast when present)
#   make demo-cloud  the box and the reference portal in network namespaces, through a real IKEv2 tunnel (root)
#   make prompts the voice prompts from agent/prompts/catalogue.py (espeak-ng + sox; cached)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# make run: where the demo agent listens. 5060 is the SIP default and needs no privilege.
HOST ?= 0.0.0.0
PORT ?= 5060
# TFTP for phone provisioning: 69 is the standard port but needs root or
# CAP_NET_BIND_SERVICE (the systemd unit grants it); make run uses an unprivileged one.
TFTP_PORT ?= 6969
# The same files over HTTP (Digest for phones with HTTP credentials); empty turns it off.
HTTP_PORT ?= 8080
SITE ?= agent/demo/site.yaml
STATE ?= var

PYTEST_ARGS ?=

# The systemd extra builds systemd-python, which needs libsystemd's headers (and a C
# compiler). The stamp name records whether it was wanted, so installing
# libsystemd-dev later re-runs the install.
HAVE_LIBSYSTEMD := $(shell pkg-config --exists libsystemd 2>/dev/null && echo yes)
STAMP := $(VENV)/.stamp-test$(if $(HAVE_LIBSYSTEMD),-systemd)

.PHONY: help venv deps deps-bench lint test run bench clean prompts demo-cloud

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------- environment

# Re-install when the project metadata changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
	  "edgepbx needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[test]'
	@# Optional: without systemd-python the agent simply does not talk to systemd.
	@if [ -n "$(HAVE_LIBSYSTEMD)" ]; then \
	  $(PIP) install -q --disable-pip-version-check -e '.[test,systemd]' || \
	  echo "make: warning: systemd-python did not build; sd_notify support is off" >&2; \
	fi
	@rm -f $(VENV)/.stamp-*
	@touch $@

venv: $(STAMP)

deps:
	@.ci/apt-deps test

deps-bench:
	@.ci/apt-deps bench

# ---------------------------------------------------------------- checks

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# deps runs first so that the venv sees libsystemd-dev when it was just installed.
test: deps
	@$(MAKE) --no-print-directory venv
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory prompts PROMPTS_FLAGS=--best-effort
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

# ---------------------------------------------------------------- voice prompts

# packaging/prompts/en/<id>.wav (8 kHz mono µ-law) from agent/prompts/catalogue.py.
# The generator keeps a content hash per prompt in en/manifest.json and redoes only what
# changed: an up-to-date run reads the manifest and exits (~0.1 s), a full set takes ~1 s.
# run/test pass --best-effort (no espeak-ng/sox: warn, go on); `make prompts` fails instead.
PROMPTS_FLAGS ?=
prompts: venv
	@$(PY) packaging/prompts/generate.py $(PROMPTS_FLAGS)

# ---------------------------------------------------------------- running

LISTEN := --listen udp:$(HOST):$(PORT) --listen tcp:$(HOST):$(PORT)

run: venv
	@$(MAKE) --no-print-directory prompts PROMPTS_FLAGS=--best-effort
	@mkdir -p $(STATE)
	@$(VENV)/bin/edgepbx softphone-settings --site $(SITE) $(LISTEN)
	@echo "Phone files over TFTP on $(HOST):$(TFTP_PORT) (tftp -m binary HOST $(TFTP_PORT) -c get XmlDefault.cnf.xml)"
	@$(if $(HTTP_PORT),echo "and over HTTP on $(HOST):$(HTTP_PORT) (curl http://127.0.0.1:$(HTTP_PORT)/XmlDefault.cnf.xml)")
	@echo
	@echo "Then call one extension from another (the demo hunt group rings on 6000)."
	@echo "Registered phones: $(VENV)/bin/edgepbx --state-dir $(STATE) phones"
	@echo "Calls up:          $(VENV)/bin/edgepbx --state-dir $(STATE) calls"
	@echo "Call records:      $(VENV)/bin/edgepbx --state-dir $(STATE) cdr   (Ctrl-C stops)"
	@echo
	exec $(VENV)/bin/edgepbx-agent --site $(SITE) --state-dir $(STATE) $(LISTEN) \
	  --tftp-listen $(HOST):$(TFTP_PORT) $(if $(HTTP_PORT),--http-listen $(HOST):$(HTTP_PORT))

demo-cloud: venv deps
	$(PY) tests/interop/demo_cloud.py

bench: deps-bench
	@$(MAKE) --no-print-directory venv
	$(PIP) install -q --disable-pip-version-check -e '.[test,bench]'
	$(PY) bench/register/run.py
	$(PY) bench/calls/run.py
	$(PY) bench/provision/run.py
	$(PY) bench/outbox/run.py
	$(PY) bench/cloud/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
