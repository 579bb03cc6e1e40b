# blockmig: `make run` sets everything up and serves the console; `make test` runs the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := run

HOST ?= 127.0.0.1
PORT ?= 8000
VENV ?= .venv
VAR ?= var
REDIS_PORT ?= 6390
WORKERS ?= 1
PY := $(VENV)/bin/python
export DJANGO_SETTINGS_MODULE := blockmig.settings

APT_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 \
	qemu-utils libvirt-dev pkg-config e2fsprogs redis-server postgresql chromium \
	busybox-static linux-image-cloud-amd64 cpio gcc python3-dev systemd lvm2 iptables

# A Python >= 3.12: on PATH first, else pyenv's newest.
PYTHON_BASE := $(shell for p in python3.13 python3.12 $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[23]*/bin/python 2>/dev/null | sort -r); do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then command -v $$p; break; fi; done)

.PHONY: run test check packages venv services redis libvirtd db lab demo serve worker bench clean-lab secret-key

packages:
	@if ! command -v virsh >/dev/null || ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null \
	    || ! command -v qemu-img >/dev/null || ! command -v debugfs >/dev/null || ! command -v pg_ctlcluster >/dev/null \
	    || ! command -v systemd-analyze >/dev/null || ! command -v iptables >/dev/null || ! command -v pvcreate >/dev/null \
	    || ! ls /boot/vmlinuz-*cloud-amd64 >/dev/null 2>&1 || ! test -x /bin/busybox; then \
	  echo "==> installing system packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml deploy/constraints.txt
	@test -n "$(PYTHON_BASE)" || { echo "No Python >= 3.12 found on PATH or under pyenv. Install python3.12+ (or pyenv install 3.13) and retry." >&2; exit 1; }
	@echo "==> virtualenv with $(PYTHON_BASE)"
	$(PYTHON_BASE) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c deploy/constraints.txt -e '.[test,dev]'
	touch $@

venv: packages $(VENV)/.installed

libvirtd: venv
	@$(VENV)/bin/python -m hosts.lab.services libvirtd

redis: packages
	@mkdir -p $(VAR)/redis
	@if [ -z "$$REDIS_URL" ] && ! redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1; then \
	  echo "==> private Redis on 127.0.0.1:$(REDIS_PORT)"; \
	  redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --daemonize yes --dir $(abspath $(VAR)/redis) \
	    --pidfile $(abspath $(VAR)/redis/redis.pid) --logfile $(abspath $(VAR)/redis/redis.log) --save '' --appendonly no; \
	  for i in $$(seq 50); do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	fi

services: venv libvirtd redis

# A private PostgreSQL for tests and development, without systemd: trust auth on 127.0.0.1
# only, run as the postgres user (PostgreSQL refuses root). Throwaway data, so no fsync.
PG_PORT ?= 5439
PG_DIR ?= /var/tmp/blockmig-pg
.PHONY: postgres
postgres: packages
	@if ! pg_isready -q -h 127.0.0.1 -p $(PG_PORT); then \
	  echo "==> private PostgreSQL on 127.0.0.1:$(PG_PORT) (data in $(PG_DIR))"; \
	  bin=$$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); \
	  if [ "$$(id -un)" = postgres ]; then as_pg=; \
	  elif [ "$$(id -u)" = 0 ]; then as_pg="runuser -u postgres --"; \
	  else echo "make postgres needs root (it runs PostgreSQL as the postgres user)" >&2; exit 1; fi; \
	  install -d -o postgres -g postgres -m 700 $(PG_DIR) || exit 1; \
	  if [ ! -f $(PG_DIR)/data/PG_VERSION ]; then \
	    $$as_pg $$bin/initdb -D $(PG_DIR)/data -U postgres --auth=trust -E UTF8 --no-locale >$(PG_DIR)/initdb.log 2>&1 \
	      || { cat $(PG_DIR)/initdb.log >&2; exit 1; }; \
	  fi; \
	  $$as_pg $$bin/pg_ctl -D $(PG_DIR)/data -l $(PG_DIR)/postgres.log -w -t 60 \
	    -o "-h 127.0.0.1 -p $(PG_PORT) -k $(PG_DIR) -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
	    start >/dev/null || { tail -n 20 $(PG_DIR)/postgres.log >&2; exit 1; }; \
	  for i in $$(seq 50); do pg_isready -q -h 127.0.0.1 -p $(PG_PORT) && break; sleep 0.1; done; \
	  pg_isready -q -h 127.0.0.1 -p $(PG_PORT) || { echo "PostgreSQL did not answer on $(PG_PORT); see $(PG_DIR)/postgres.log" >&2; exit 1; }; \
	fi

# The lab's secret key: made once, kept (mode 0600), read by every process through
# settings (<var>/secret_key). A deployment sets DJANGO_SECRET_KEY(_FILE) instead.
secret-key: $(VAR)/secret_key
$(VAR)/secret_key:
	@mkdir -p $(VAR)
	@(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(50))' > $@.tmp) && mv $@.tmp $@
	@echo "==> made a secret key in $@"

db: venv secret-key
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_roles

lab: services db
	$(PY) manage.py lab_up

demo: lab
	$(PY) manage.py demo_accounts

# Each worker and the sync loop run under deploy/supervise, which starts it again whenever it
# exits (production: the systemd units in deploy/). Ctrl-C (daphne exits) stops them all.
run: demo
	@echo "==> serving on http://$(HOST):$(PORT)  (accounts in README.md)"
	@trap 'kill 0' EXIT; \
	for i in $$(seq $(WORKERS)); do deploy/supervise worker-$$i $(PY) manage.py run_worker & done; \
	deploy/supervise sync-loop $(PY) manage.py sync_loop & \
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) blockmig.asgi:application

# Lint, format and types (ruff and mypy, configured in pyproject.toml); no services, no
# root. CI runs it first. mypy's Django plugin imports the settings, which need a secret
# key: a throwaway one, for this command only.
LINTED := blockmig hosts tests bench manage.py
check: venv
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	DJANGO_SECRET_KEY=mypy-check-only $(VENV)/bin/mypy

test: services postgres secret-key
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: services secret-key
	$(PY) bench/run_all.py
