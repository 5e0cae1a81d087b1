# Developer entry points. On a fresh clone `make run` and `make test` need Python 3.11 (with its
# venv module and headers), a C and C++ compiler and, for PostgreSQL and as root, apt: they
# create .venv, install requirements.txt, and start the Redis and PostgreSQL they need
# (dev/services.py).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# pip runs again only when requirements.txt (or the client's pyproject.toml) is newer than this.
STAMP := $(VENV)/.requirements-installed
CLIENT := $(wildcard client/pyproject.toml)
# Extra pytest arguments, e.g. `make test ARGS="-k ledger -x"`.
ARGS ?=

.PHONY: help venv run test test-sqlite test-postgres lint fmt schema bench prod-check reliability clean distclean

help:
	@echo "make run            start the exchange on 127.0.0.1:\$$PORT (8000) with Redis, a worker and beat"
	@echo "make test           the test suite on SQLite and PostgreSQL (ARGS=... for pytest)"
	@echo "make test-sqlite    only on SQLite;  make test-postgres: only on PostgreSQL"
	@echo "make lint / fmt     ruff check, format check, the import layers, makemigrations --check / fix and format"
	@echo "make schema         validate the OpenAPI schema into var/openapi.yaml"
	@echo "make bench          run every bench/*.py with --quick (not bench/harness.py, bench/*_wsgi.py)"
	@echo "make prod-check     the production topology of deploy/ on this machine: smoke flow, backup drill, stop"
	@echo "make reliability    10 minutes of load and injected faults on a private stack (ARGS=--quick: 2 minutes)"
	@echo "make clean          caches and test state;  make distclean: also .venv and var/"

venv: $(STAMP)

$(PY):
	@set -e; \
	py="$(PYTHON)"; \
	if ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		if command -v python3.11 >/dev/null 2>&1; then py=python3.11; \
		else echo "Python 3.11 or newer is needed ($(PYTHON) is older or missing); run with PYTHON=/path/to/python3.11" >&2; exit 1; fi; \
	fi; \
	echo "Creating $(VENV) with $$("$$py" -c 'import sys; print(sys.executable)')"; \
	"$$py" -m venv $(VENV) || { rm -rf $(VENV); echo "python -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }

# dev/install.py first checks for the compilers and Python headers that pdqhash and
# native/hamming need (and names the packages to install), then shows pip's progress.
$(STAMP): requirements.txt $(CLIENT) | $(PY)
	$(PY) -m dev.install
	@touch $@

# dev/server.py creates .env from .env.example when missing, with this checkout's own Redis port.
run: venv
	$(PY) -m dev.server

test: venv
	$(PY) -m dev.testrun $(ARGS)

test-sqlite: venv
	TEST_DATABASES=sqlite $(PY) -m dev.testrun $(ARGS)

test-postgres: venv
	TEST_DATABASES=postgres $(PY) -m dev.testrun $(ARGS)

# Also: every model change has its migration (an upgrade must never need makemigrations).
lint: venv
	@status=0; \
	$(RUFF) check . || status=1; \
	$(RUFF) format --check . || status=1; \
	$(VENV)/bin/lint-imports --no-cache || status=1; \
	ENV_FILE=/dev/null DEBUG=1 $(PY) manage.py makemigrations --check --dry-run || status=1; \
	exit $$status

fmt: venv
	$(RUFF) check --fix .
	$(RUFF) format .

schema: venv
	@mkdir -p var
	DEBUG=$${DEBUG:-1} $(PY) manage.py spectacular --validate --fail-on-warn --file var/openapi.yaml
	@echo "Wrote var/openapi.yaml"

bench: venv
	@set -e; found=0; \
	for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		case "$$script" in bench/harness.py|bench/*_wsgi.py) continue;; esac; found=1; \
		echo "== $$script --quick"; $(PY) "$$script" --quick; \
	done; \
	[ $$found = 1 ] || echo "No benchmarks yet (bench/*.py)."

# deploy/'s topology started from deploy/Procfile (the units' commands), a smoke flow through
# nginx, Prometheus scraping, a stray beat, and the backup drill; then everything is stopped.
prod-check: venv
	$(PY) -m dev.prodcheck $(ARGS)

reliability: venv
	$(PY) -m dev.reliability $(ARGS)

clean:
	@if [ -f var/test-postgres/data/postmaster.pid ]; then \
		echo "The test PostgreSQL in var/test-postgres is running; stop it first:" \
			"$(PY) -m dev.services postgres --stop" >&2; exit 1; fi
	rm -rf .pytest_cache .ruff_cache .hypothesis staticfiles
	rm -rf var/test.sqlite3* var/test-redis var/test-postgres var/test-worker.log var/openapi.yaml var/prod-check
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) var
