# Thin wrappers over the real commands. `make run` and `make test` do all the set-up.
PY      := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PG_URL  ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: setup run test test-sqlite test-postgres lint bench clean

setup: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,postgres,redis]'
	touch $@

run: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py serve

test: test-sqlite test-postgres

test-sqlite: setup
	$(PY) -m pytest

# The engine's integration suite again, on PostgreSQL (skips when the server is
# unreachable, fails instead when CI=true).
test-postgres: setup
	DATABASE_URL=$(PG_URL) $(PY) -m pytest -m integration tests/spawner

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) bench/bench_engine.py

clean:
	rm -rf var .pytest_cache
