# The two set-up commands of README.md: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: venv demo test lint browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# clip-retrieval's ClipClient and packaged web front for the compatibility tests, without its own
	# dependencies: they pin numpy<2 and open-clip-torch<3 (ours: numpy 2, open-clip-torch 3.3); the client
	# needs only requests (a test extra)
	$(BIN)/pip install -q --no-deps clip-retrieval==2.45.0
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium for the service's browser test (Debian packages; Playwright drives /usr/bin/chromium).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser test will be skipped"

demo: $(STAMP)
	$(BIN)/trafficsearch demo

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .import_linter_cache
