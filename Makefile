# Two commands on a fresh Debian/Ubuntu machine:  `make demo` (a 2-worker training) and `make test`.
# Both install what they need first: Debian packages (once) and a virtual environment in .venv/.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# chromium-headless-shell and poppler-utils: the tests render TensorBoard's pages in a real browser;
# nftables: the testbed's bridge takes no other user's traffic
APT_PACKAGES := openmpi-bin libopenmpi-dev slurm-wlm munge libpmix-dev dataset-fashion-mnist cmake g++ \
  chromium-headless-shell poppler-utils nftables
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup apt venv demo test test-compat lint horovod clean

setup: apt venv

apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); }

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py .ci/cpu-constraints.txt
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c .ci/cpu-constraints.txt -e '.[torch,tf-cpu,test]'
	touch $@

# The main job: 2-worker DDP training of the MLP on real Fashion-MNIST, 1 thread per worker
# (OMP_NUM_THREADS says so to torchrun, which otherwise prints a banner about choosing it).
demo: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node=2 -m torch_dist.train --config configs/mlp.yaml \
	  data.dataset=fashion-mnist train.epochs=2 train.threads=1 log.run_name=demo-$$(date +%Y%m%d-%H%M%S)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The oldest torch, TensorFlow and Python that setup.py allows (.ci/compat-constraints.txt), in a
# second environment: 2-worker DDP and MultiWorkerMirroredStrategy runs under torchrun, mpirun and
# the local launcher. COMPAT_PYTHON: a Python 3.10 (with pyenv: PYENV_VERSION=3.10.13 python3.10).
COMPAT := .venv-compat
COMPAT_PYTHON ?= python3.10
COMPAT_TESTS := tests/test_torch_dist.py::test_two_workers_train_fashion_mnist \
  tests/test_torch_dist.py::test_fp16_gets_a_loss_scaler_on_every_torch_setup_py_allows \
  tests/test_devices.py::test_a_gpu_rank_binds_its_device_when_the_group_is_made \
  tests/test_tf_dist.py::test_multi_worker_trains_fashion_mnist_with_identical_weights \
  tests/test_launchers.py::test_mpirun_launcher_trains tests/test_launchers.py::test_local_launcher_prefixes_other_ranks_and_trains \
  tests/test_multihost.py::test_rank_and_world_size_alone_on_two_hosts_find_their_hosts
test-compat: apt
	[ -x $(COMPAT)/bin/python ] || $(COMPAT_PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/bin/python -m pip install -q -c .ci/compat-constraints.txt -e '.[torch,tf-cpu,test]'
	$(COMPAT)/bin/python -m pytest -p no:xdist -o addopts="-p no:cacheprovider" $(COMPAT_TESTS)

# The linter and formatter (ruff.toml); `$(VENV)/bin/ruff format .` applies the formatting.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Optional: Horovod for torch_dist (dist.backend=horovod). Builds a wheel for the installed torch
# once (a few minutes; cached in ~/.cache/mnist-dist/wheels), then installs it in seconds.
horovod: setup
	$(PY) -m torch_dist.horovod_build

clean:
	rm -rf $(VENV) $(COMPAT) runs .pytest_cache
