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

## the handover certification: hardware and inference checks, card under reports/latest/
certify:
	$(PYTEST) -m "hardware or inference" --report-dir reports/latest $(ARGS)

## after an approved upgrade: merge this run's measurements into baselines/ (review the git diff)
update-baselines:
	$(PYTEST) -m "hardware or inference" --update-baselines $(ARGS)

clean:
	rm -rf reports .pytest_cache
