# avssl: every target creates .venv on first use; nothing else is needed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build to install first. Override for your machine, e.g.
#   make test TORCH_PKGS="torch torchvision"     (latest from PyPI)
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: demo test test-all bench lint clean setup app

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PKGS)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/avssl demo $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-all: setup
	$(BIN)/python -m pytest -q

# the local web page on the demo's SSL-TIE checkpoint (trained first when missing); Ctrl-C stops it
app: setup
	$(BIN)/python -m pip install --quiet -e '.[app]'
	test -f $(DEMO_OUT)/runs/ssltie_seed0/best.pt || $(BIN)/avssl demo $(DEMO_OUT) --methods ssltie
	$(BIN)/avssl app --checkpoint $(DEMO_OUT)/runs/ssltie_seed0/best.pt

bench: setup
	$(BIN)/python benchmarks/run_all.py

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
