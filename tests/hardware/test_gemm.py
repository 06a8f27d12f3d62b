"""GEMM checks on cuda:0: TFLOP/s per dtype × shape, and % of the datasheet dense peak.

Three checks, so thresholds.yaml can tell them apart by name:
- gemm_square: square m = n = k, compute-bound; the datasheet rules apply here;
- gemm_projection: the model preset's QKV / O / MLP up / MLP down GEMMs of one tensor-parallel
  rank at 1..16k tokens; small m is memory-bound, so these are judged on baselines only;
- gemm_max_achievable: the best TFLOP/s of a shape search (mamf-finder), per dtype.
Every figure is a sustained one (engine.SQUARE_SUSTAIN …): seconds of back-to-back work on a GPU
preheated once, not a burst that ends inside the power-averaging window at boost clocks.
The sweep (sizes, preset, TP, token counts, search grid and budget) is the engine's shipped
default; the numbers a check is judged against live in thresholds.yaml and the baselines.
"""

import pytest

from gpucert.physics import datasheet
from gpucert.physics import gemm as engine
from gpucert.physics.core import Result

pytestmark = pytest.mark.hardware

DEVICE_INDEX = 0
PROJECTION_DTYPES = ("bf16", "fp8")  # the dtypes a served model's linear layers run in

SQUARES = {engine.square(size).name: engine.square(size) for sizes in engine.SQUARE_SIZES.values() for size in sizes}
PROJECTIONS = {shape.name: shape for shape in engine.projection_shapes(
    engine.model_preset(engine.DEFAULT_MODEL), engine.DEFAULT_TP, engine.TOKEN_COUNTS)}


SQUARE_CASES = [pytest.param(dtype, engine.square(size).name, id=f"{dtype}-{engine.square(size).name}")
                for dtype, sizes in engine.SQUARE_SIZES.items() for size in sizes]
PROJECTION_CASES = [pytest.param(dtype, name, id=f"{dtype}-{name}") for dtype in PROJECTION_DTYPES for name in PROJECTIONS]


def record_tflops(gpucert, dtype, result, *, note=None, params=None):
    """tflops of one measured Result, with the datasheet peak of that dtype for this GPU model
    (the card shows the % of peak beside it; metrics.json keeps the peak)."""
    name, spec = datasheet.gpu_of(gpucert.snapshot, DEVICE_INDEX)
    peak = spec.dense_tflops.get(dtype) if spec else None
    notes = "; ".join(n for n in (note, None if spec else datasheet.no_entry_note(name)) if n) or None
    gpucert.record_result("tflops", result, result.tflops, unit="TFLOP/s", direction="higher",
                          samples=result.rate_samples("tflops"), peak=peak, note=notes, params=params)
    if result.status == "skipped":
        pytest.skip(result.error)


@pytest.fixture(scope="module")
def preheated(cuda_devices):
    """Before the first GEMM figure, once: the GPU at the power and temperature it holds under
    load (later shapes are kept there by those before them)."""
    engine.preheat(f"cuda:{DEVICE_INDEX}", engine.PREHEAT_S)


@pytest.mark.parametrize("dtype,shape", SQUARE_CASES)
def test_gemm_square(gpucert, preheated, dtype, shape):
    result = engine.run_shape(dtype, SQUARES[shape], f"cuda:{DEVICE_INDEX}", **engine.SQUARE_SUSTAIN)
    record_tflops(gpucert, dtype, result)


@pytest.mark.parametrize("dtype,shape", PROJECTION_CASES)
def test_gemm_projection(gpucert, preheated, dtype, shape):
    result = engine.run_shape(dtype, PROJECTIONS[shape], f"cuda:{DEVICE_INDEX}", **engine.PROJECTION_SUSTAIN)
    # the TP degree shapes n or k, so it is part of the metric's key (a TP=4 run has its own baseline)
    record_tflops(gpucert, dtype, result, params={"tp": engine.DEFAULT_TP})


@pytest.mark.parametrize("dtype", engine.DTYPES)
def test_gemm_max_achievable(gpucert, preheated, dtype):
    grid = engine.span(*engine.SEARCH_RANGES[dtype])
    found = engine.search_max(dtype, f"cuda:{DEVICE_INDEX}", grid, grid, grid, budget_s=engine.SEARCH_BUDGET_S,
                              sustain_top=engine.SEARCH_SUSTAIN_TOP, **engine.SEARCH_SUSTAIN)
    if found.best is None:
        failed = Result("gemm", {}, f"cuda:{DEVICE_INDEX}", status=found.status, error=found.error)
        record_tflops(gpucert, dtype, failed, note=found.note)
        return
    # the shape is a finding, not a parameter: a new best shape must not orphan the baseline
    summary = f"best shape {found.best_shape} (m x n x k) of {len(found.tried)} of {found.total} shapes tried"
    record_tflops(gpucert, dtype, found.best, note="; ".join(filter(None, (summary, found.note))))
