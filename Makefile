# The two set-up commands: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deepslim-installed

.PHONY: demo test test-all venv clean

venv: $(STAMP)

# Reinstalls only when pyproject.toml changed; a second run starts in seconds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deepslim demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
