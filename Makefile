# gpucert: the main job is `make certify`; the suite's own tests are `make test`.
# Each target first creates or refreshes the project's virtualenv (tools/setup_venv.py: over the
# node's own CUDA PyTorch and vLLM where this Python has them, else with the CPU build of
# PyTorch). `make certify PYTHON=/path/to/python` uses that environment as it is instead.
VENV ?= .venv
BOOTSTRAP_PYTHON ?= python3
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
SETUP_NODE = $(BOOTSTRAP_PYTHON) tools/setup_venv.py --venv $(VENV)
SETUP_SELFTEST = $(BOOTSTRAP_PYTHON) tools/setup_venv.py --venv $(VENV) --selftest
else
SETUP_NODE = @true
SETUP_SELFTEST = @true
endif
# -c: pytest reads pyproject.toml whatever paths ARGS hold (an absolute folder given as a separate
# word would otherwise move its rootdir there and drop the settings)
PYTEST ?= $(PYTHON) -m pytest -c pyproject.toml
# extra pytest arguments, e.g. make hardware ARGS="--snapshot-from captured/"
ARGS ?=
# the node's checks; the self-tests (tests/selftest) are not collected with them, so a broken
# self-test can never stop a certification
CHECKS ?= tests/hardware tests/inference

.PHONY: test test-slow hardware inference certify update-baselines nightly study workloads forensics burnin fleet clean setup

# the self-tests on every core (pytest-xdist); XDIST= runs them in one process (the fault table,
# pytest tests/selftest -m fault --fault-table FILE, is right either way). `--dist loadgroup` would keep a
# module's costly fixture on one worker, but does nothing on pytest 9.2 (xdist 3.8 sets `_nodeid`)
XDIST ?= -n auto

## the suite's self-tests (CPU, no GPU needed), all but the heavy ones marked `slow`
test:
	$(SETUP_SELFTEST)
	$(PYTEST) tests/selftest -q $(XDIST) -m "not slow" $(ARGS)

## the heavy self-tests alone (real Ray clusters, the real CPU model, long emulator runs); CI runs
## `make test test-slow`
test-slow:
	$(SETUP_SELFTEST)
	$(PYTEST) tests/selftest -q $(XDIST) -m slow $(ARGS)

## create or refresh the virtualenv alone (every target below does it first)
setup:
	$(SETUP_NODE)

## hardware checks before handover: stack drift, then (as they land) GEMM, memory, P2P, NCCL
hardware:
	$(SETUP_NODE)
	$(PYTEST) $(CHECKS) -m hardware $(ARGS)

## inference checks: a real vLLM under load
inference:
	$(SETUP_NODE)
	$(PYTEST) $(CHECKS) -m inference $(ARGS)

# the certification's load: five levels, each measured three times (noise-aware verdicts), so
# hardware + offline + serving fit the budget on 2x H100/H200 (the full 1 … 4,096 sweep of
# serving.yaml is `make inference`)
CERTIFY_BUDGET_MIN ?= 15
CERTIFY_OPTS ?= --load-opt concurrency=1,16,64,256,1024 --load-opt requests_per_level=2 --load-opt repeats=3

## the handover certification: hardware and inference checks, card under reports/latest/
certify:
	$(SETUP_NODE)
	$(PYTEST) $(CHECKS) -m "hardware or inference" --certify --report-dir reports/latest --time-budget-min $(CERTIFY_BUDGET_MIN) \
	  $(CERTIFY_OPTS) $(ARGS)

## nightly regression (CI: ci/gpucert-nightly.yml): the certification against the committed
## baselines, a metric without one fails, the run's record goes to history/ (the card's trends)
nightly:
	$(SETUP_NODE)
	$(PYTEST) $(CHECKS) -m "hardware or inference" --certify --missing-baseline=fail --history-dir history --report-dir reports/nightly \
	  --time-budget-min $(CERTIFY_BUDGET_MIN) --junitxml reports/nightly/junit.xml $(CERTIFY_OPTS) $(ARGS)

## optimization studies (KV-cache saturation, batching, precision, capacity under SLO, the tuned
## configuration; tests/studies, gpucert/data/studies.yaml or ARGS="--studies-file FILE"): vLLM
## restarts per point; not part of certify's budget
study:
	$(SETUP_NODE)
	$(PYTEST) tests/studies -m study --report-dir reports/study $(ARGS)

## production-like workloads (tests/workloads): shared prefixes, multi-turn conversations, a trace
## replayed at its timestamps; the prefix cache's hit rate and TTFT with and without it
workloads:
	$(SETUP_NODE)
	$(PYTEST) tests/workloads -m inference --report-dir reports/workloads $(ARGS)

## the node-level checks on every GPU node of a Ray cluster at once (tests/fleet): a check per node,
## its own verdict and its figures against the fleet's median; every node needs this repository at
## the same path and its venv. RAY_ADDRESS: auto, HOST:PORT or ray://HOST:PORT; the nodes' pytest
## arguments: ARGS='--fleet-args "tests/hardware -m hardware"'
RAY_ADDRESS ?= auto
fleet:
	$(SETUP_NODE)
	$(PYTEST) tests/fleet -m fleet --ray-address $(RAY_ADDRESS) --report-dir reports/fleet $(ARGS)

## forensics (tests/forensics, gpucert/data/forensics.yaml or ARGS="--forensics-file FILE"): a
## profiler window under load per capture (CUDA graphs, enforce_eager), read for its idle gaps and
## decode steps; not part of certify's budget
forensics:
	$(SETUP_NODE)
	$(PYTEST) tests/forensics -m forensics --report-dir reports/forensics $(ARGS)

## burn-in before handover (tests/burnin): every GPU under sustained GEMM and HBM load, alone and
## together, for BURNIN_MIN minutes, with the monitor's slowdowns, ECC and XID events; then the memtest
BURNIN_MIN ?= 10
burnin:
	$(SETUP_NODE)
	$(PYTEST) tests/burnin -m burnin --report-dir reports/burnin --burnin-min $(BURNIN_MIN) $(ARGS)

## after an approved upgrade: merge this run's measurements into baselines/ (review the git diff)
update-baselines:
	$(SETUP_NODE)
	$(PYTEST) $(CHECKS) -m "hardware or inference" --update-baselines $(CERTIFY_OPTS) $(ARGS)

clean:
	rm -rf reports .pytest_cache
