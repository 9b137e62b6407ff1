# `make demo` and `make test` set up everything they need, then run.
# Setup is idempotent: system packages only when missing, the venv once.

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
SYSPKG := qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static qemu-guest-agent cpio tmux mmdebstrap
STAMP  := $(VENV)/.installed

.PHONY: setup sysdeps venv image debian-image demo lint test test-fast bench clean

setup: sysdeps venv image

sysdeps:
	@missing=""; for p in $(SYSPKG); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,ray]'
	@touch $(STAMP)

venv: $(STAMP)

# Builds (or finds cached) the built-in `linux` profile's initramfs and agent overlay.
image: venv sysdeps
	$(VENV)/bin/provium prepare linux

# The built-in `debian` guest's image (mmdebstrap: a minute or two the first time, then
# cached; the agent or kernel changing costs seconds).  `make test` boots it.
debian-image: venv sysdeps
	$(VENV)/bin/provium prepare debian

demo: setup
	$(VENV)/bin/provium examples/

# ruff and mypy first: seconds, and they fail before the long real-VM run starts.
lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

test: setup lint debian-image
	$(PY) -m pytest -q tests

test-fast: venv lint
	$(PY) -m pytest -q -m "not qemu" tests

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
