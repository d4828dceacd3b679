# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: demo test lint nab bench bench-forecast bench-fleet system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,dev,rocksdb]'
	@touch $(STAMP)

# Debian packages some tests drive: docker-compose validates docker-compose.yml without an
# engine; chromium + chromium-driver render the dashboard. Installed only when missing.
system-deps:
	@bash scripts/system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/novacron demo $(DEMO_ARGS)

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -ra

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

nab: $(STAMP)
	$(PY) -m bench.nab

bench-forecast: $(STAMP)
	$(PY) -m bench.forecast

bench-fleet: $(STAMP)
	$(PY) -m bench.fleet_quality

bench: $(STAMP)
	$(PY) -m bench.throughput

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
