# The same commands everywhere: README, CI (.ci/run) and developers call these.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[eval,test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## The main job, offline, on embedded defaults (SQLite, local or embedded Redis, tiny model).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/captionq demo $(ARGS)

## The whole suite: unit, integration (real Redis, SQLite + PostgreSQL, real Celery worker).
## Most tests wait on real processes, so two pytest processes share the cores, each taking
## whole modules (their services are set up once a module); TEST_WORKERS=0 runs one.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check schemas producers worker review evaluation tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
