# The interception proxy. `make help` lists the targets.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: help install test-deps run run-proxy run-local run-transparent run-uts certs doctor test bench fuzz soak typecheck clean

help:
	@echo "make run-proxy [ARGS=...]      app server + mitmproxy regular mode on 127.0.0.1:8080"
	@echo "make run-local PID=N [ARGS=...] app server + mitmproxy capturing process N (Linux: root)"
	@echo "make run-transparent USER=U [ARGS=...] app server + mitmproxy capturing user U's TCP by iptables (Linux: root)"
	@echo "make run [ARGS=...]            the app server alone (mitmproxy started on startInterception)"
	@echo "make run-uts [UTS_PORT=9100] [ARGS=...] the app server speaking uts-proxy's REST API (docs/uts-proxy.md)"
	@echo "make test                      the whole test suite (installs what it needs)"
	@echo "make bench                     the benchmark"
	@echo "make certs                     create mitmproxy's CA and print its path"
	@echo "make doctor [MODE=proxy|local] [PID=N]  check that interception works here, step by step"
	@echo "make fuzz / make soak          long fuzzing (10,000 examples) / soak (100 x 1,000 messages)"
	@echo "make typecheck                 mypy --strict over the product code"

$(STAMP): pyproject.toml scripts/find-python
	@python=$$(scripts/find-python) || exit 1; \
	  echo "using $$python"; \
	  [ -x $(PY) ] || $$python -m venv $(VENV) || exit 1
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

NODE_STAMP := tests/js/node_modules/.installed
CLIENT_STAMP := shared/js/node_modules/.installed
CLIENT_SOURCES := shared/js/package.json shared/js/package-lock.json shared/js/build.mjs shared/js/index.mjs \
                  $(wildcard shared/js/src/*.cjs)

# The JavaScript client (SPEC Part 7): its dependencies, and its browser bundle (shared/js/dist/browser.mjs),
# so that `npm install <checkout>/shared/js` works as written.
$(CLIENT_STAMP): $(CLIENT_SOURCES)
	npm ci --prefix shared/js --no-audit --no-fund --loglevel=error
	npm run --prefix shared/js --silent build
	@touch $@

# The real ably-js SDK (and playwright-core, mocha, the client from shared/js) for the end-to-end tests.
$(NODE_STAMP): tests/js/package.json tests/js/package-lock.json $(CLIENT_STAMP)
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
	@touch $@

# The real ably-python SDK, in a virtualenv of its own: it needs websockets < 16, the proxy 17.
SDK_PY_VENV  := .venv-ably-python
SDK_PY_STAMP := $(SDK_PY_VENV)/.installed

$(SDK_PY_STAMP): $(STAMP) tests/py_sdk/requirements.txt
	@[ -x $(SDK_PY_VENV)/bin/python ] || $(PY) -m venv $(SDK_PY_VENV)
	$(SDK_PY_VENV)/bin/python -m pip install --quiet -r tests/py_sdk/requirements.txt
	@touch $@

install: $(STAMP) $(CLIENT_STAMP)

test-deps: $(STAMP) $(NODE_STAMP) $(SDK_PY_STAMP)
	@scripts/system-deps

run: $(STAMP)
	$(PY) -m appserver $(ARGS)

run-proxy: $(STAMP)
	$(PY) -m appserver --start-mitmproxy proxy $(ARGS)

UTS_PORT ?= 9100
run-uts: $(STAMP)
	$(PY) -m appserver --uts-port $(UTS_PORT) $(ARGS)

MODE ?= proxy
doctor: $(STAMP)
	$(PY) -m appserver doctor --mode $(MODE) $(if $(PID),--pid $(PID))

run-local: $(STAMP)
	@[ -n "$(PID)" ] || { echo "usage: make run-local PID=<id of the process to capture> [ARGS=...]" >&2; exit 2; }
	$(PY) -m appserver --start-mitmproxy local:$(PID) $(ARGS)

# USER is also set by the shell, so only a USER= given on the command line counts.
run-transparent:
	@[ "$(origin USER)" = "command line" ] && [ -n "$(USER)" ] || { echo "usage: make run-transparent USER=<name or uid whose TCP connections to capture> [ARGS=...]  (Linux, root, iptables; see docs/transparent.md)" >&2; exit 2; }
	@$(MAKE) --no-print-directory $(STAMP)
	$(PY) -m appserver --start-mitmproxy transparent:$(USER) $(ARGS)

certs: $(STAMP)
	@$(PY) -m appserver.certs $(CERTS_ARGS)

test: test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

typecheck: $(STAMP)
	$(PY) -m mypy --strict appserver shared redirector

fuzz: test-deps
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/control/test_fuzz.py tests/uts/test_uts_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

soak: test-deps
	SOAK=full $(PY) -m pytest tests/relay/test_soak.py -s -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py $(BENCH_ARGS)
	$(PY) scripts/bench_sessions.py $(filter --quick,$(BENCH_ARGS))

clean:
	rm -rf $(VENV) $(SDK_PY_VENV) .pytest_cache
