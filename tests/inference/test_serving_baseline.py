"""What users feel at each concurrency level: output tok/s, TTFT, TPOT and ITL, judged against the
profile's baselines and the SLOs in thresholds.yaml. Levels come from the load settings
(serving.yaml; `--load-opt concurrency=1,16,64`); `repeats` measures each level several times."""

import pytest

from .load import measure_level

pytestmark = pytest.mark.inference


def test_serving_baseline(gpucert, serving, concurrency):
    measure_level(gpucert, serving, concurrency)
