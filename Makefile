# Set-up and tasks. Every target creates .venv itself when needed.
#   make install   .venv with torch==2.13.0 (CPU wheel) and the package in editable mode + test extras
#   make test      install if needed, then run the test suite
#   make bench     image-encoder latency (eager / fused / fused+channels_last) on this machine
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m repvit_sam.bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
