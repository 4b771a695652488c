# Two things a new user needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export CDZ_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install demo test bench clean

$(BIN)/cdz: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/cdz  ## create .venv and install the project with its dev extras

demo: install  ## replay MNIST/FSDD, learn, print the score table
	$(BIN)/cdz replay --out runs/demo --overwrite

test: install  ## the test suite (small data subsets, a few minutes on 2 cores)
	$(BIN)/pytest -q

bench: install  ## throughput of the learning core vs a plain implementation
	$(BIN)/cdz bench core

clean:
	rm -rf runs .pytest_cache
