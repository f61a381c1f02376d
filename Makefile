# Two commands on a fresh machine with python3: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One thread per numeric library: on 2 cores, competing thread pools slow XGBoost and BLAS tenfold.
THREADS := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \
	TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2

.PHONY: install demo dashboard test test-all lint clean

$(BIN)/deeppcos: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $@

install: $(BIN)/deeppcos

demo: install
	$(BIN)/deeppcos demo --out demo

dashboard: install
	$(BIN)/deeppcos dashboard demo/run

test: install
	$(THREADS) $(BIN)/python -m pytest -q

test-all: install
	$(THREADS) $(BIN)/python -m pytest -q -m ''

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf demo .pytest_cache .ruff_cache .mypy_cache
