# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck pytest ts-test node-check system-deps migrate clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamp files re-run the install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/kintsugi-rt serve

migrate: $(VENV)/.installed
	$(BIN)/kintsugi-rt migrate

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# System packages the tests need, installed with apt when missing: coturn's `turnserver` (tests/test_turn.py
# runs its own on loopback). On a systemd machine the package starts and enables a system-wide daemon
# (it would hold port 3478 with /etc/turnserver.conf), so a fresh install stops and disables it.
system-deps:
	@command -v turnserver >/dev/null 2>&1 || { \
		echo "make: installing coturn (turnserver, for tests/test_turn.py) with apt-get"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null && \
		if [ -d /run/systemd/system ]; then systemctl disable --now coturn.service; fi && \
		command -v turnserver >/dev/null; \
	} || { echo "make: could not install coturn (apt-get install coturn, as root)" >&2; exit 1; }

pytest: $(VENV)/.installed-dev system-deps
	$(BIN)/pytest

# The TypeScript client (clients/typescript): its tests spawn real servers from this venv; Node 20+.
TS_DIR := clients/typescript

node-check:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "make: Node.js 20 or newer (with npm) is needed for the TypeScript client tests; node/npm not found" >&2; exit 1; }
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (a < 20 || (a === 20 && b < 6)) { console.error("make: Node.js 20 (20.6+) or newer is needed for the TypeScript client tests (found " + process.version + ")"); process.exit(1); }'

# npm ci again whenever package.json or package-lock.json changes.
$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json | node-check
	npm ci --prefix $(TS_DIR) --no-audit --no-fund
	@touch $@

ts-test: node-check $(VENV)/.installed $(TS_DIR)/node_modules/.installed
	npm run --prefix $(TS_DIR) build
	npm test --prefix $(TS_DIR)

test: lint typecheck pytest ts-test

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(TS_DIR)/node_modules $(TS_DIR)/dist
