# The README's two commands: `make demo` and `make test`. Both install what they need first
# (Debian packages with apt-get, Python packages into .venv with pip), so they work on a fresh
# Debian 12 machine whose only network is PyPI and Debian's archive.
SHELL := /bin/bash
PYTHON ?= python3
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
