PYTHON ?= python3
PIP_FLAGS ?= -q

.PHONY: install demo test test-all lint bench clean

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e ".[dev]"

demo: install
	$(PYTHON) -m zoo demo --out report --overwrite

test: install
	$(PYTHON) -m pytest

test-all: install
	$(PYTHON) -m pytest -m ""

lint: install
	$(PYTHON) -m ruff check .

bench: install
	$(PYTHON) -m pip install $(PIP_FLAGS) pgmpy
	$(PYTHON) -m benchmarks.run_all

clean:
	rm -rf report runs .pytest_cache
