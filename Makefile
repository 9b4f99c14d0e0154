# Two entry points for a fresh machine: `make run` and `make test`. Both create .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint

# The first install takes about 4 minutes and 2.1 GB (README): pip shows what it downloads.
$(STAMP): pyproject.toml constraints.txt
	@echo "coral: creating $(VENV) (first time: about 4 minutes, 2.1 GB)" >&2
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, exactly this version: it installs the local CPU build; a looser pin downloads gigabytes.
	@echo "coral: installing torch (CPU build)" >&2
	$(PY) -m pip install --progress-bar on torch==2.13.0
	@echo "coral: installing coral and its dependencies" >&2
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy
