# Two commands do all set-up: `make demo` and `make test`. Every step is idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test fuzz bench env tools clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# External programs the integration tests drive (anvil, Chromium, ...), installed once.
tools: $(STAMP)
	@bash scripts/install-tools.sh

demo: $(STAMP)
	$(BIN)/veil demo

# --dist loadfile: a file's tests share running nodes (module fixtures) and build on each other.
test: $(STAMP) tools
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

fuzz: $(STAMP)
	VEIL_FUZZ_SECONDS=$${VEIL_FUZZ_SECONDS:-300} $(BIN)/python -m pytest -q tests -k fuzz -p no:xdist

bench: $(STAMP) tools
	for b in publish swarm chain stream feed node; do $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .tools build *.egg-info src/*.egg-info
