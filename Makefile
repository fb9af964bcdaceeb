# Two entry points: `make demo` (the main job) and `make test` (the whole test suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/lgg
PATIENT ?= TCGA_CS_5395_19981004
TORCH ?= torch==2.13.0
TORCH_GIVEN := $(filter command line environment,$(origin TORCH))

.PHONY: setup demo test lint clean FORCE

# the torch a TORCH= asked for, remembered in .venv/.torch: another TORCH= reinstalls torch there;
# without TORCH=, the torch .venv has is kept (one chosen earlier, or installed by hand: "keep")
$(VENV)/.torch: FORCE
	@mkdir -p $(VENV)
	@if [ -n "$(TORCH_GIVEN)" ] || { [ ! -e $@ ] && [ ! -e $(BIN)/tumorseg ]; }; then \
		if [ "$$(cat $@ 2>/dev/null)" != '$(TORCH)' ]; then echo '$(TORCH)' > $@; fi; \
	elif [ ! -e $@ ]; then echo keep > $@; touch -r $(BIN)/tumorseg $@; fi

$(BIN)/tumorseg: pyproject.toml $(VENV)/.torch
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@spec="$$(cat $(VENV)/.torch)"; if [ "$$spec" != keep ]; then \
		if [ -e $@ ] && [ $(VENV)/.torch -nt $@ ]; then echo "reinstalling torch: $$spec"; \
			$(BIN)/pip uninstall -q -y torch 2>/dev/null || true; fi; \
		$(BIN)/pip install -q $$spec; fi
	$(BIN)/pip install -q -e ".[test,onnx,medical,serve]"
	touch $@

setup: $(BIN)/tumorseg

demo: setup
	@if [ ! -d "$(DATA)" ]; then \
		echo "No data at $(DATA)."; \
		echo "Put the LGG kaggle_3m folder there (<CASE>/<CASE>_<n>.tif with <CASE>_<n>_mask.tif beside each),"; \
		echo "or run: make demo DATA=/path/to/kaggle_3m"; \
		exit 2; fi
	@if [ ! -d "$(DATA)/$(PATIENT)" ]; then \
		echo "No patient $(PATIENT) in $(DATA)."; \
		if [ -d "$(DATA)/kaggle_3m" ]; then echo "Did you mean: make demo DATA=$(DATA)/kaggle_3m"; \
		else echo "DATA should hold the kaggle_3m patient folders (TCGA_...); or pick one: make demo PATIENT=<folder>"; fi; \
		exit 2; fi
	$(BIN)/tumorseg predict $(DATA)/$(PATIENT) --out runs/demo/predict --overlay
	$(BIN)/tumorseg evaluate --data $(DATA) --split test --out runs/demo/evaluate --report
	@echo "Overlays: runs/demo/predict/*_overlay.png   Report: runs/demo/evaluate/report.html"

lint: setup
	$(BIN)/ruff check src tests scripts benchmarks setup.py
	$(BIN)/ruff format --check src tests scripts benchmarks setup.py

# the suite in TEST_WORKERS processes (pytest-xdist), each test file in one of them; TEST_WORKERS=0 runs it in this one
TEST_WORKERS ?= 2
test: setup lint
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
