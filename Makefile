# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck pytest ts-test web-test node-check system-deps migrate clean

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

# Builds the web app (web/dist, served at /) first when it is missing and Node.js 20.19+ with npm is here;
# without them (or if the build fails) it says how, and the server runs all the same (the API needs no build).
run: $(VENV)/.installed
	@if [ ! -f web/dist/index.html ] && [ -f web/package.json ]; then \
		if command -v npm >/dev/null 2>&1 && node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null; then \
			echo "make: building the web app once (web/dist): npm ci --prefix web && npm run build --prefix web"; \
			{ npm ci --prefix web --no-audit --no-fund && npm run build --prefix web; } || \
				echo "make: the web app did not build (see above); the server runs without it" >&2; \
		else \
			echo "make: web/dist is missing and Node.js 20.19+ with npm is not installed: the server runs without the web app." >&2; \
			echo "make: to build it: npm ci --prefix web && npm run build --prefix web (then reload http://localhost:$${PORT:-8080}/)" >&2; \
		fi; \
	fi
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
# runs its own on loopback) and Debian's `chromium` (with fonts), which the browser tests drive. On a systemd
# machine the coturn package starts and enables a system-wide daemon (it would hold port 3478 with
# /etc/turnserver.conf), so a fresh install stops and disables it.
system-deps:
	@command -v turnserver >/dev/null 2>&1 || { \
		echo "make: installing coturn (turnserver, for tests/test_turn.py) with apt-get"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null && \
		if [ -d /run/systemd/system ]; then systemctl disable --now coturn.service; fi && \
		command -v turnserver >/dev/null; \
	} || { echo "make: could not install coturn (apt-get install coturn, as root)" >&2; exit 1; }
	@test -x $(CHROMIUM) || { \
		echo "make: installing chromium (for the browser tests, make web-test) with apt-get"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-liberation fonts-noto-color-emoji >/dev/null && \
		test -x $(CHROMIUM); \
	} || { echo "make: could not install chromium (apt-get install chromium, as root)" >&2; exit 1; }

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

# The web app (web/): Playwright (pinned in web/package.json) drives Debian's Chromium against a real
# server serving the fresh build (web/tests/global-setup.ts); Playwright's own browsers are never downloaded.
WEB_DIR  := web
CHROMIUM ?= /usr/bin/chromium
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

$(WEB_DIR)/node_modules/.installed: $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json | node-check
	npm ci --prefix $(WEB_DIR) --no-audit --no-fund
	@touch $@

web-test: node-check system-deps $(VENV)/.installed $(TS_DIR)/node_modules/.installed $(WEB_DIR)/node_modules/.installed
	npm run --prefix $(TS_DIR) build
	npm run build --prefix $(WEB_DIR)
	cd $(WEB_DIR) && npx tsc -p tests/tsconfig.json && CHROMIUM_PATH=$(CHROMIUM) npx playwright test

test: lint typecheck pytest ts-test web-test

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(TS_DIR)/node_modules $(TS_DIR)/dist \
		$(WEB_DIR)/node_modules $(WEB_DIR)/dist $(WEB_DIR)/tests/results $(WEB_DIR)/tests/screenshots
