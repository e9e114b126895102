# Sieve: `make run` starts the dashboard, `make test` runs the whole suite. Both set up everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SIEVE_HOME ?= $(CURDIR)/.sieve
DB ?= $(SIEVE_HOME)/demo.duckdb
PORT ?= 8501
export SIEVE_HOME

.PHONY: run test demo bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(DB): | $(STAMP)
	$(PY) -m core demo --db $(DB)

demo: $(STAMP)
	$(PY) -m core demo --db $(DB)

run: $(STAMP) $(DB)
	SIEVE_DB=$(DB) $(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

test: $(STAMP) $(DB)
	SIEVE_DB=$(DB) $(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) $(SIEVE_HOME)
