# The two Quickstart commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo
# The folder coverage/ must never be imported as `coverage` from the checkout (it would shadow
# coverage.py): Python leaves the current folder off sys.path.
export PYTHONSAFEPATH := 1

.PHONY: demo test setup setup-test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

setup-test: $(BIN)/python browser
	$(BIN)/python -m pip install --quiet -e ".[test]"

# The browser test drives Debian's Chromium through its chromedriver; nothing downloads a browser.
# Installed only when missing, with sudo when not root; without either the browser test skips.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "make browser: not root and no sudo; the browser test will skip"; exit 0; fi; \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    chromium chromium-driver; \
	fi

demo: setup
	$(BIN)/covplan demo --out $(OUT)

test: setup-test
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --cov=covplan --cov-report=term:skip-covered

clean:
	rm -rf $(VENV) out .pytest_cache .coverage
