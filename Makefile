# The README's set-up commands. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-avx2 lint clean

install: $(VENV)/.installed

# Exact versions are pinned only here; pyproject.toml keeps lower bounds. torch 2.14.1 is the
# oldest build with a working torchvision on these machines (../shared/README.md).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 timm==1.0.31 transformers==5.24.0
	$(BIN)/pip install --quiet -e ".[dev,vision,hf]"
	touch $@

demo: install
	$(BIN)/famr demo --overwrite

test: install
	$(BIN)/python -m pytest -q

# The science tests (marker `science`: thresholds on trained or unlearned models) again with
# every kernel library capped at AVX2, as on a CPU without AVX-512: a result that hangs on one
# CPU's kernels or summation order fails here instead of on a user's machine. CI runs both.
test-avx2: install
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
		$(BIN)/python -m pytest -q -m science

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
