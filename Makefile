# Thin wrappers over the real commands. `make run` and `make test` do all the set-up.
PY      := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PG_URL  ?= postgres://postgres@127.0.0.1:5432/test
REDIS_URL_TEST ?= redis://127.0.0.1:6379/5
# The real coding-agent CLIs the real_cli tests drive, installed inside the clone (.cache/agents).
CLAUDE_CODE_VERSION ?= 2.1.332
CODEX_VERSION ?= 0.169.0
GEMINI_CLI_VERSION ?= 0.61.0
AIDER_VERSION ?= 0.86.2

.PHONY: setup agents run test test-sqlite test-postgres test-redis test-faults lint bench clean

setup: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,postgres,redis]'
	touch $@

# Claude Code, Codex and Gemini CLI from npm into .cache/agents, aider from PyPI into .cache/aider:
# pinned, never outside the clone.
AGENTS_STAMP := .cache/agents/.installed-$(CLAUDE_CODE_VERSION)-$(CODEX_VERSION)-$(GEMINI_CLI_VERSION)
agents: $(AGENTS_STAMP) .cache/aider/.installed-$(AIDER_VERSION)

$(AGENTS_STAMP):
	mkdir -p .cache/agents
	npm install --prefix .cache/agents --no-audit --no-fund \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) @openai/codex@$(CODEX_VERSION) \
		@google/gemini-cli@$(GEMINI_CLI_VERSION)
	.cache/agents/node_modules/.bin/claude --version
	.cache/agents/node_modules/.bin/codex --version
	.cache/agents/node_modules/.bin/gemini --version
	touch $@

# aider from PyPI, pinned, in a virtualenv of its own (its dependencies pin their own versions).
.cache/aider/.installed-$(AIDER_VERSION):
	rm -rf .cache/aider
	python3 -m venv .cache/aider
	.cache/aider/bin/pip install -q aider-chat==$(AIDER_VERSION)
	.cache/aider/bin/aider --version
	touch $@

run: setup
	$(PY) manage.py migrate --noinput
	-$(PY) manage.py spawner_demo   # the parallel-coding example's repository; needs git, optional
	$(PY) manage.py serve

test: test-sqlite test-postgres test-redis test-faults

test-sqlite: setup agents
	$(PY) -m pytest

# The engine's integration suite again, on PostgreSQL (skips when the server is
# unreachable, fails instead when CI=true). Tests marked `once` (git's work, not the database's)
# ran on SQLite already.
test-postgres: setup
	DATABASE_URL=$(PG_URL) $(PY) -m pytest -m "integration and not real_cli and not slow and not faults and not once" tests/spawner

# The at-scale shape: PostgreSQL plus the Redis broker, for the execution suite, two named clusters
# serving the same batches (caps, staggers, budgets across both), and the cluster faults (kill -9 of a
# cluster holding a backlog it popped from Redis, drains, orphans), and the deployed topology: two
# clusters and a web process with separate log directories and one shared log storage.
test-redis: setup
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_URL_TEST) $(PY) -m pytest -m integration tests/spawner/test_execution.py \
		tests/spawner/test_clusters.py tests/spawner/test_faults.py tests/spawner/test_shared_logs.py

# Faults at scale on PostgreSQL + Redis: kill -9 of one of three clusters, a partition longer than
# the lease, a PostgreSQL restart (a private instance) and dropped connections. Prints `faults:` lines.
test-faults: setup
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_URL_TEST) $(PY) -m pytest -m faults -s tests/spawner/test_fault_injection.py tests/spawner/test_broker_faults.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_events.py
	$(PY) bench/bench_pages.py
	$(PY) bench/bench_worktrees.py
	$(PY) bench/bench_models.py

clean:
	rm -rf var .pytest_cache
