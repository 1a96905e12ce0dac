# mst_lava — setup, demo, tests, benchmarks.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
	$(VPY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mst demo

test: setup
	$(VPY) -m pytest -q tests

test-slow: setup
	$(VPY) -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) build *.egg-info
