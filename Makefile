# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup demo test bench lint docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/scorer demo

# Three workers on two cores: a third of the suite's time is spent waiting (on `scorer` processes, Ray, sockets,
# settle timers). Each test file stays on one worker, so its module fixtures are made once.
TEST_JOBS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/bench.py

docs: $(STAMP)
	$(BIN)/python -m scorer.docs_reference > docs/configuration.md

lint: $(STAMP)
	$(BIN)/ruff check scorer tests bench
	$(BIN)/mypy scorer

clean:
	rm -rf $(VENV) build *.egg-info
