# Two things a new user needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export CDZ_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install demo demo-distributed test bench bench-robustness bench-adapt seeds clean

$(BIN)/cdz: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/cdz  ## create .venv and install the project with its dev extras

demo: install  ## replay MNIST/FSDD, learn, print the score table
	$(BIN)/cdz replay --out runs/demo --overwrite

test: install  ## the test suite (small data subsets, about 8 minutes on 2 cores)
	$(BIN)/pytest -q -n 2

bench: install  ## learning core vs a plain implementation; runtime throughput and latency
	$(BIN)/cdz bench core
	$(BIN)/cdz bench pipeline

bench-robustness: install  ## unseen speakers, noise, distortion, teacher mistakes (trains 9 runs, about an hour)
	$(BIN)/cdz bench robustness --out runs/robustness

bench-adapt: install  ## new voices and an unseen hand: recall before and after a session and a sleep (trains 7 runs, about an hour)
	$(BIN)/cdz bench adapt --out runs/adapt

seeds: install  ## the main job over seeds 0-9: per-seed table, mean, min, seeds with exactly 10 classes (about an hour)
	$(BIN)/cdz replay --seeds 0-9 --no-baselines --out runs/seeds --overwrite

demo-distributed: install  ## the main job with bus, hub, workers and player as separate processes
	$(BIN)/cdz replay --distributed --out runs/demo-distributed --overwrite

clean:
	rm -rf runs .pytest_cache
