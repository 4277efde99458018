# The README's two commands: `make demo` and `make test`. Both install what they need first
# (Debian packages with apt-get, Python packages into .venv with pip), so they work on a fresh
# Debian 12 machine whose only network is PyPI and Debian's archive.
SHELL := /bin/bash
# Debian's own python3 when it is 3.11 or newer: built with PGO and LTO and linked statically,
# it starts ~2.5 ms sooner and runs Python code ~1.4x faster than an --enable-shared build
# (pyenv's default), which every command and every container start pays (BENCHMARKS.md)
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo /usr/bin/python3 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
# peers the tests check us against, and what the engine and runtime need on the host
APT_PACKAGES := busybox-static skopeo umoci podman buildah runc conmon docker-registry containerd \
	oci-image-tool nftables iptables iproute2 uidmap fuse-overlayfs libseccomp2 curl jq apache2-utils \
	hyperfine openssl python3-venv hey
PYTEST_ARGS ?=

.PHONY: setup apt venv demo test lint bench clean

setup: apt venv
	@$(PY) -m compileall -q -j0 src >/dev/null  # bytecode up front: start-up time is measured

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[all,test]'
	@# pip writes the launchers as installed (#!/bin/sh, which re-executes the venv's python -I -S:
	@# pip drops interpreter arguments from shebangs); here the venv's path is known, so the
	@# shebang names its python with -IS itself and the sh hop (~1.5 ms a command) goes
	@py='$(abspath $(VENV))/bin/python3'; \
	if [ $${#py} -lt 240 ] && [ "$${py//[[:space:]]/}" = "$$py" ]; then \
	  sed -i "1s|^#!/bin/sh\$$|#!$$py -IS|" $(VENV)/bin/pallet $(VENV)/bin/pallet-runtime; fi
	touch $@

demo: setup
	$(VENV)/bin/python scripts/demo.py

test: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf $(VENV) build *.egg-info
