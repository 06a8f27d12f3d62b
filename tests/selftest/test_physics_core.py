"""The one timing loop and the benchmark lifecycle (physics/core.py), on the CPU."""

import time

import pytest

from gpucert.physics import core, gemm
from gpucert.physics.gemm import Gemm
from gpucert.physics.core import Benchmark, BenchmarkSkipped, Result, measure, stats_of, time_op


class Counting(Benchmark):
    """A benchmark that counts its calls; each knob breaks one step of the lifecycle."""

    name = "counting"

    def __init__(self, fail_in=None, wrong=None, sleep_s=0.0):
        super().__init__(fail_in=fail_in)
        self.fail_in, self.wrong, self.sleep_s = fail_in, wrong, sleep_s
        self.calls = 0
        self.torn_down = False

    def setup(self, device):
        if self.fail_in == "skip":
            raise BenchmarkSkipped("this device has no such unit")
        if self.fail_in == "setup":
            raise MemoryError("out of memory")

    def op(self):
        self.calls += 1
        if self.fail_in == "op":
            raise RuntimeError("kernel launch failed")
        if self.sleep_s:
            time.sleep(self.sleep_s)

    def flops(self):
        return 4e12

    def bytes_moved(self):
        return 2e9

    def check(self):
        return self.wrong

    def teardown(self):
        self.torn_down = True


def test_time_op_on_cpu_returns_one_positive_sample_per_repetition():
    calls = []
    samples, note = time_op(lambda: calls.append(1), "cpu", warmup=2, reps=7)
    assert len(samples) == 7 and all(s > 0 for s in samples)
    assert len(calls) == 9  # warm-up runs are not timed
    assert note is None


def test_time_op_flushes_before_every_timed_iteration_only():
    order = []
    time_op(lambda: order.append("op"), "cpu", warmup=1, reps=3, flush=lambda: order.append("flush"))
    assert order == ["op", "flush", "op", "flush", "op", "flush", "op"]


def test_time_budget_stops_early_keeps_the_samples_and_says_so():
    samples, note = time_op(lambda: time.sleep(0.01), "cpu", warmup=0, reps=1000, max_time_s=0.05)
    assert 2 <= len(samples) < 1000
    assert note == f"time budget 0.05 s reached after {len(samples)} of 1000 repetitions"


def test_measure_ok_carries_samples_work_and_rates():
    bench = Counting()
    result = measure(bench, "cpu", warmup=1, reps=5)
    assert result.status == "ok" and result.error is None
    assert len(result.samples_s) == 5 and bench.calls == 6
    assert result.flops == 4e12 and result.bytes == 2e9
    assert result.tflops == pytest.approx(4 / result.median_s)
    assert result.gbps == pytest.approx(2 / result.median_s)
    assert bench.torn_down
    assert result.to_dict()["stats_s"]["rounds"] == 5


@pytest.mark.fault('engine', 'a benchmark kernel raises mid-timing', 'status error with the exception text, teardown still runs, no samples claimed')
def test_an_exception_becomes_status_error_and_teardown_still_runs():
    bench = Counting(fail_in="op")
    result = measure(bench, "cpu", warmup=1, reps=3)
    assert result.status == "error"
    assert result.error == "RuntimeError: kernel launch failed"
    assert result.samples_s == [] and bench.torn_down


@pytest.mark.fault('engine', 'a benchmark setup runs out of memory', 'status error with the reason')
def test_a_failing_setup_is_an_error_too():
    result = measure(Counting(fail_in="setup"), "cpu")
    assert (result.status, result.error) == ("error", "MemoryError: out of memory")


@pytest.mark.fault('engine', 'a benchmark computes a wrong result at good speed', 'status error "wrong result", timings kept but not a pass')
def test_a_wrong_check_is_an_error_even_with_good_timings():
    result = measure(Counting(wrong="3 of 64 elements differ"), "cpu", warmup=0, reps=3)
    assert result.status == "error"
    assert result.error == "wrong result: 3 of 64 elements differ"
    assert len(result.samples_s) == 3  # what was timed stays on the record


def test_benchmark_skipped_becomes_status_skipped_with_the_reason():
    result = measure(Counting(fail_in="skip"), "cpu")
    assert (result.status, result.error) == ("skipped", "this device has no such unit")
    assert result.tflops is None and result.rate_samples("tflops") == []


def test_rate_samples_convert_each_iteration_time():
    result = Result("r", {}, "cpu", samples_s=[1.0, 2.0, 0.5], flops=2e12, bytes=4e9)
    assert result.rate_samples("tflops") == [2.0, 1.0, 4.0]
    assert result.rate_samples("gbps") == [4.0, 2.0, 8.0]
    assert result.tflops == pytest.approx(2.0)  # at the median time (1.0 s)


def test_stats_of_samples():
    stats = stats_of([1.0, 2.0, 3.0, 4.0])
    assert stats["median"] == 2.5 and stats["min"] == 1.0 and stats["rounds"] == 4
    assert stats_of([]) == {}


def test_base_teardown_drops_buffers_but_keeps_params():
    bench = Benchmark(size=8)
    bench.buffer = bytearray(8)
    bench.teardown()
    assert bench.buffer is None and bench.params == {"size": 8}


# ---- sustained timing of µs-scale work: a CUDA graph instead of the host's launch rate ----------
# CUDA cannot exist here: the graph capture and the CUDA events are replaced at that boundary only.

def fake_capture(captured):
    def capture(op, device, batch):
        captured.append(batch)
        return lambda: [op() for _ in range(batch)]
    return capture


@pytest.mark.parametrize("eager_s, cycle, batch", [
    (8e-6, 1, 125),      # a replay holds GRAPH_REPLAY_S of eager launches
    (8e-6, 42, 84),      # ... rounded down to whole cycles of the weight copies
    (1e-7, 42, 1008),    # ... and at most GRAPH_MOST iterations
    (90e-6, 1, 12),
    (90e-6, 64, 64),     # never fewer than one cycle
])
def test_a_short_iteration_is_captured_whole_cycles_at_a_time(monkeypatch, eager_s, cycle, batch):
    captured = []
    monkeypatch.setattr(core, "capture_graph", fake_capture(captured))
    bench = Counting()
    replay, got, note = core._graphed(bench.op, "cuda:0", eager_s, cycle)
    assert (got, captured) == (batch, [batch]) and got % cycle == 0
    replay()
    assert bench.calls == batch
    assert f"CUDA graph of {batch}" in note and f"{eager_s * 1e6:.1f} µs" in note


def test_work_that_cannot_be_captured_is_timed_eagerly_and_says_why(monkeypatch):
    def refuse(op, device, batch):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(core, "capture_graph", refuse)
    bench = Counting()
    op, batch, note = core._graphed(bench.op, "cuda:0", 6e-6, 1)
    assert batch == 1 and op == bench.op
    assert "capture failed: operation not permitted" in note


class FakeEvent:
    def __init__(self, ms):
        self.ms = ms

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return other.ms - self.ms


def test_a_replayed_block_is_divided_by_the_iterations_each_replay_holds():
    samples, timeline = [], []
    took = core._take_block((FakeEvent(0.0), FakeEvent(100.0), 10), samples, timeline, batch=84)
    assert took == pytest.approx(0.1)
    assert samples == [pytest.approx(0.1 / 840)] and len(timeline) == 1


@pytest.mark.parametrize("graph_batch, method", [(84, core.SUSTAINED_GRAPH), (1, core.SUSTAINED)])
def test_a_graph_timed_figure_carries_its_own_method(monkeypatch, graph_batch, method):
    """Another method, so a baseline of eager launches is never compared with it (judge.py)."""
    said = "iterations replayed from a CUDA graph of 84" if graph_batch > 1 else None
    monkeypatch.setattr(core, "time_sustained",
                        lambda *a, **k: core.Sustained([2e-3, 1e-3, 3e-3], said, graph_batch))
    result = measure(Counting(), "cpu", sustain_s=0.3, warmup_s=0.1)
    assert result.status == "ok" and result.method == method and result.median_s == 2e-3
    assert result.note.startswith("sustained: 0.1 s warm-up, then 3 blocks")
    assert (said in result.note) if said else "graph" not in result.note


def test_on_the_cpu_sustained_work_is_never_graphed():
    result = measure(Counting(), "cpu", sustain_s=0.05)
    assert result.status == "ok" and result.method == core.SUSTAINED and "graph" not in result.note
    bench = Gemm("fp32", 1, 64, 64)  # a decode-sized GEMM: graphed on a GPU, never here
    bench.setup("cpu")
    assert bench.graph_sustained is False and bench.cycle == 1


def test_which_gemms_replay_from_a_graph_is_decided_by_their_size():
    """The same shapes every run (a method that flipped with a timing would leave a metric without
    a baseline of its method): certify's decode-sized projections, never a square or a search shape."""
    shapes = gemm.projection_shapes(gemm.model_preset(gemm.DEFAULT_MODEL), gemm.DEFAULT_TP)
    graphed = {s.name.rsplit("-m", 1)[1] for s in shapes if 2 * s.m * s.n * s.k < gemm.GRAPH_BELOW_FLOP}
    eager = {s.name.rsplit("-m", 1)[1] for s in shapes if 2 * s.m * s.n * s.k >= gemm.GRAPH_BELOW_FLOP}
    assert {"1", "16", "128", "1024"} <= graphed and "1024" not in eager and "16384" in eager
    assert 2 * 4096 ** 3 >= gemm.GRAPH_BELOW_FLOP  # the smallest square and search shape
