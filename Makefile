# Two entry points: `make demo` (the main job) and `make test` (the whole test suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/lgg
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint clean

$(BIN)/tumorseg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/tumorseg

demo: setup
	@if [ ! -d "$(DATA)" ]; then \
		echo "No data at $(DATA). Put a kaggle_3m folder there (<CASE>/<CASE>_<n>.tif + _mask), or run: make demo DATA=/path/to/kaggle_3m"; \
		exit 2; fi
	$(BIN)/tumorseg train --data $(DATA) --out runs/demo --epochs 1 --max-patients 12

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: setup lint
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs .pytest_cache
