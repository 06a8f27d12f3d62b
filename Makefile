# gpucert: the main job is `make certify`; the suite's own tests are `make test`.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
# extra pytest arguments, e.g. make hardware ARGS="--snapshot-from captured/"
ARGS ?=

.PHONY: test hardware inference certify update-baselines nightly clean

## the suite's self-tests (CPU, no GPU needed; what CI runs)
test:
	$(PYTEST) tests/selftest -q $(ARGS)

## hardware checks before handover: stack drift, then (as they land) GEMM, memory, P2P, NCCL
hardware:
	$(PYTEST) -m hardware $(ARGS)

## inference checks: a real vLLM under load
inference:
	$(PYTEST) -m inference $(ARGS)

# the certification's load: five levels, each measured three times (noise-aware verdicts), so
# hardware + offline + serving fit the budget on 2x H100/H200 (the full 1 … 4,096 sweep of
# serving.yaml is `make inference`)
CERTIFY_BUDGET_MIN ?= 15
CERTIFY_OPTS ?= --load-opt concurrency=1,16,64,256,1024 --load-opt requests_per_level=2 --load-opt repeats=3

## the handover certification: hardware and inference checks, card under reports/latest/
certify:
	$(PYTEST) -m "hardware or inference" --report-dir reports/latest --time-budget-min $(CERTIFY_BUDGET_MIN) \
	  $(CERTIFY_OPTS) $(ARGS)

## nightly regression (CI: ci/gpucert-nightly.yml): the certification against the committed
## baselines, a metric without one fails, the run's record goes to history/ (the card's trends)
nightly:
	$(PYTEST) -m "hardware or inference" --missing-baseline=fail --history-dir history --report-dir reports/nightly \
	  --time-budget-min $(CERTIFY_BUDGET_MIN) --junitxml reports/nightly/junit.xml $(CERTIFY_OPTS) $(ARGS)

## after an approved upgrade: merge this run's measurements into baselines/ (review the git diff)
update-baselines:
	$(PYTEST) -m "hardware or inference" --update-baselines $(CERTIFY_OPTS) $(ARGS)

clean:
	rm -rf reports .pytest_cache
