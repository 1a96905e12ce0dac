# mst_lava — setup, demo, tests, benchmarks.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup data demo demo-fmnist test test-slow bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
	# NeuroBench's synaptic-operation rule, for tests/test_neurobench_synops.py only; --no-deps: its pins
	# (torchaudio) would replace torch, and what it imports (numba, snntorch's modules) is already here
	$(VPY) -m pip install -q --no-deps neurobench==2.3.0 snntorch==1.0.0
	$(VPY) -m pip install -q --no-deps -e .
	$(VPY) -c "from mst_lava.lava.compat import install_pth; print('Lava start-up hook:', install_pth())"
	touch $(STAMP)

# Fashion-MNIST from Debian's package (nothing is fetched by the toolkit itself at run time).
FMNIST_DIR := /usr/share/datasets/fashion-mnist
data:
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ]; then \
		echo "Fashion-MNIST is installed in $(FMNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's dataset-fashion-mnist ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
		&& echo "Fashion-MNIST installed in $(FMNIST_DIR)"; \
	else \
		echo "Fashion-MNIST is missing. As root run: apt-get update && apt-get install -y dataset-fashion-mnist"; \
		echo "(or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,"; \
		echo " t10k-labels-idx1-ubyte.gz in a folder and pass --data DIR); Fashion-MNIST tests are skipped until then."; \
	fi

demo: setup
	$(VENV)/bin/mst demo

demo-fmnist: setup data
	$(VENV)/bin/mst demo --dataset fmnist

test: setup
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q -n 2 tests

test-slow: setup
	$(VPY) -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) build *.egg-info
