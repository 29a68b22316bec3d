# Set-up and entry points. `make demo` and `make test` each create .venv and install first.
#
# TORCH_SPEC pins the torch/torchvision pair. The default installs offline on the project's
# build machines (from their local wheel cache); on a GPU cluster choose the build for its CUDA,
# e.g.  make test TORCH_SPEC="torch==2.6.0 torchvision==0.21.0" \
#            TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_ARGS ?=

.PHONY: install system-deps demo test test-slow test-slurm lint clean-results

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_SPEC) $(TORCH_PIP_ARGS)
	$(PIP) install -q -e '.[test]'
	touch $@

# Debian packages for the browser test of the HTML report (chromium) and the one-node SLURM
# test (slurm-wlm, munge). Needs root and apt; ~1-2 min. Without them those tests skip
# (outside CI) with the line to run.
SYSTEM_PACKAGES ?= chromium slurm-wlm munge
system-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) > /dev/null

# The demo: vanilla, the best energy baseline (layout_energy) and CVG with the shipped weights
# on held-out shapes prompts (spatial + motion, the categories the shipped classifier guides),
# each at the setting the fixed protocol chose (their config defaults); then the leaderboard (strict pass = oracle/pass,
# validity, time x vanilla), the HTML report and its contact sheet.
DEMO_DIR ?= results/demo
DEMO_RUN = $(PY) -m cvg_bench run benchmark=shapes benchmark.split=heldout \
	'benchmark.categories=[spatial_relationships,motion_binding]' benchmark.limit=2 'seeds=[0,1]' \
	'scorer=[oracle]' results_dir=$(DEMO_DIR) leaderboard=false $(DEMO_ARGS)
demo: install
	$(DEMO_RUN) method=vanilla
	$(DEMO_RUN) method=layout_energy
	$(DEMO_RUN) method=cvg
	$(PY) -m cvg_bench leaderboard 'results_dirs=[$(DEMO_DIR)/shapes]' out_dir=$(DEMO_DIR)/leaderboard
	$(PY) -m cvg_bench report 'results_dirs=[$(DEMO_DIR)/shapes]' out_dir=$(DEMO_DIR)/report
	@echo "demo: leaderboard $(DEMO_DIR)/leaderboard, report $(DEMO_DIR)/report/index.html," \
		"contact sheet $(DEMO_DIR)/report/shapes_contact_sheet.png"

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# A real one-node SLURM cluster (root, slurm-wlm + munge): an array sweep, scancel, requeue.
test-slurm: install
	$(PY) -m pytest -q -m slurm tests/test_slurm_sweep.py

clean-results:
	rm -rf results/runs results/demo results/leaderboards
