# Two commands for a fresh machine (see README.md):
#   make demo   installs lightspan with the local model and runs the end-to-end demo
#   make test   installs what the tests need (Python packages, Debian packages, the
#               Collector/Jaeger/model builds when missing) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test setup lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# native/ is the store's Rust OTLP converter, built by `pip install` (setuptools-rust) when
# cargo is there: editing it re-runs the install.
NATIVE := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

$(VENV)/.installed: pyproject.toml $(NATIVE) | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

$(VENV)/.installed-demo: pyproject.toml $(NATIVE) | $(BIN)/python
	$(BIN)/pip install -q -e '.[store,local-llm]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/lightspan demo

# Each script in .ci/setup.d installs or starts one thing the tests need, and is a
# no-op when it is already there.
setup: venv
	@for s in .ci/setup.d/*.sh; do echo "== setup: $$s"; VENV=$(VENV) bash "$$s" || exit 1; done

test: setup
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info native/target src/lightspan/store/intake/_otlp_native*.so
