PYTHON ?= python3
PIP_FLAGS ?= -q

.PHONY: install demo test test-all test-seeds lint bench clean

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e ".[dev]"

demo: install
	$(PYTHON) -m pyro_zoo demo --out report --overwrite

test: install
	$(PYTHON) -m pytest

test-all: install
	$(PYTHON) -m pytest -m ""

# every statistical test and notebook check under 20 other seeds (ZOO_TEST_SEED=1..20), about 2 hours
test-seeds: install
	$(PYTHON) -m tests.seed_sweep --out seed-sweep

lint: install
	$(PYTHON) -m ruff check .

bench: install
	$(PYTHON) -m pip install $(PIP_FLAGS) pgmpy
	$(PYTHON) -m benchmarks.run_all

clean:
	rm -rf report runs seed-sweep .pytest_cache
