# Sieve: `make run` starts the dashboard, `make test` runs the whole suite. Both set up everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the compiled thumbnail kernel (core/thumbnails.c): without a C compiler, Sieve computes the
# same thumbnails with numpy, more slowly, and `python -m core.native` says so
NATIVE := core/_thumbnails.so
SIEVE_HOME ?= $(CURDIR)/.sieve
DB ?= $(SIEVE_HOME)/demo.duckdb
# the tests' own demo catalog: the dashboard's may have accounts, which page tests do not sign in to
TEST_DB ?= $(SIEVE_HOME)/test-demo.duckdb
PORT ?= 8501
# accounts: the first start creates `admin` and prints its one-time password (off: single-user)
SIEVE_ACCOUNTS ?= on
export SIEVE_HOME

.PHONY: run test demo bench clean

# Ray (the optional cluster engine) is installed too, so that the tests run it on a clean clone
$(STAMP): requirements.txt requirements-dev.txt requirements-ray.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -r requirements-ray.txt
	touch $(STAMP)

$(NATIVE): core/thumbnails.c core/native.py | $(STAMP)
	$(PY) -m core.native

$(DB): | $(STAMP) $(NATIVE)
	$(PY) -m core demo --db $(DB)

# rebuilt when the demo's code changes: the tests check what it builds
$(TEST_DB): core/demo.py | $(STAMP) $(NATIVE)
	$(PY) -m core demo --force --db $(TEST_DB)

demo: $(STAMP) $(NATIVE)
	$(PY) -m core demo --db $(DB)

run: $(STAMP) $(NATIVE) $(DB)
	SIEVE_DB=$(DB) SIEVE_ACCOUNTS=$(SIEVE_ACCOUNTS) $(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false \
		--server.fileWatcherType none

test: $(STAMP) $(NATIVE) $(TEST_DB)
	SIEVE_DB=$(TEST_DB) $(PY) -m pytest -q tests

bench: $(STAMP) $(NATIVE)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) $(SIEVE_HOME) $(NATIVE)
