"""What users feel at each concurrency level: output tok/s, TTFT, TPOT and ITL, judged against the
profile's baselines and the SLOs in thresholds.yaml. Levels come from the load settings
(serving.yaml; `--load-opt concurrency=1,16,64`); `repeats` measures each level several times."""

import pytest

from .load import record_level, run_level

pytestmark = pytest.mark.inference


def test_serving_baseline(gpucert, serving, concurrency):
    runs = []
    try:
        for repeat in range(serving.load.repeats):
            if serving.crashed():
                pytest.fail(f"the engine is down before this level (repeat {repeat + 1}): {serving.crashed()}",
                            pytrace=False)
            runs.append(run_level(serving, concurrency, serving.load.requests_at(concurrency), repeat=repeat))
            if runs[-1].deadline_passed:  # a server that stalls would stall every repeat: one deadline is enough
                gpucert.finding("deadline", notice=f"the level's {runs[-1].deadline_s:g} s deadline ended repeat "
                                                   f"{repeat + 1} of {serving.load.repeats}; its requests in flight "
                                                   "failed, the repeats after it were not run")
                break
    except KeyboardInterrupt:
        # Ctrl-C (or the budget's stop) inside the level: the repeats that finished are recorded,
        # then the stop goes on and the plugin marks the check incomplete
        if runs:
            record_level(gpucert, serving, runs)
        raise
    summary = record_level(gpucert, serving, runs)
    crashed = serving.crashed(grace_s=2.0 if summary.failed else 0.0)
    if crashed:
        pytest.fail(f"the engine died during this level ({summary.completed} of {summary.completed + summary.failed} "
                    f"requests completed, kept on the card): {crashed}", pytrace=False)
