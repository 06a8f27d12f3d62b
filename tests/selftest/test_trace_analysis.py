"""The forensics analysis engine (gpucert.forensics.gaps / steps / analyze, `gpucert analyze`) on
timelines whose gaps and steps are known to the microsecond: every figure is asserted exactly,
then the command end to end on a Kineto-shaped JSON file, then a 2,000,000-op timeline."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pytest

from gpucert import cli
from gpucert.forensics import gaps as gaps_mod
from gpucert.forensics.analyze import NO_GPU_FINDING, analyze, render_text
from gpucert.forensics.cli import finite
from gpucert.forensics.steps import NO_STEPS_NOTE, compile_pattern, find_steps
from gpucert.forensics.timeline import KERNEL, MEMCPY, MEMSET, TimelineBuilder

WALL_OFFSET_US = 1_700_000_000_000_000.0  # Unix µs of the trace's time 0


def timeline(ops=(), calls=(), ranges=(), wall_offset_us=None):
    """ops: (device, kind, name, start, end, stream, correlation); calls: (name, start, end,
    correlation); ranges: (name, start, end)."""
    builder = TimelineBuilder("pytorch", "synthetic.json")
    for device, kind, name, start, end, stream, correlation in ops:
        builder.device_op(device, kind, name, start, end, stream=stream, correlation=correlation)
    for name, start, end, correlation in calls:
        builder.host_call(name, start, end, correlation=correlation)
    for name, start, end in ranges:
        builder.host_range(name, start, end)
    builder.wall_offset_us = wall_offset_us
    return builder.build()


def k(start, end, name="gemm", stream=7, correlation=-1, device=0, kind=KERNEL):
    return (device, kind, name, start, end, stream, correlation)


def only_gap(result, device="0"):
    gaps = result["devices"][device]["worst_gaps"]
    assert len(gaps) == 1, gaps
    return gaps[0]


# ---- busy share and gap arithmetic ---------------------------------------------------------------

def test_overlapping_ops_on_two_streams_merge_into_one_busy_interval():
    tl = timeline(ops=[k(0, 10, stream=1), k(5, 20, stream=2), k(8, 12, stream=3), k(50, 60, stream=1)])
    d = analyze(tl)["devices"]["0"]
    assert d["busy_pct"] == 50.0  # busy [0, 20) and [50, 60): 30 µs of 60
    assert d["busy_ms"] == 0.03 and d["span_ms"] == 0.06
    assert d["ops"] == {"kernel": 4, "memcpy": 0, "memset": 0, "total": 4} and d["streams"] == 3
    assert d["idle_gaps"]["count"] == 1 and d["idle_gaps"]["total_ms"] == 0.03 and d["idle_gaps"]["max_us"] == 30.0
    gap = only_gap(analyze(tl))
    # the op that ends the busy interval before the gap is the one that reaches furthest (stream 2)
    assert gap["start_us"] == 20.0 and gap["dur_us"] == 30.0


def test_the_op_before_a_gap_is_the_one_with_the_latest_end_not_the_latest_start():
    tl = timeline(ops=[k(0, 100, name="long"), k(10, 20, name="short", stream=8), k(150, 160, name="next")])
    gap = only_gap(analyze(tl))
    assert (gap["before"], gap["after"], gap["start_us"], gap["dur_us"]) == ("long", "next", 100.0, 50.0)


def test_a_19_us_hole_is_not_a_gap_at_20_but_is_at_10_and_20_us_counts_at_20():
    tl = timeline(ops=[k(0, 10), k(29, 40), k(60, 70)])  # holes of 19 and 20 µs
    at20 = analyze(tl, gap_us=20)["devices"]["0"]["idle_gaps"]
    at10 = analyze(tl, gap_us=10)["devices"]["0"]["idle_gaps"]
    assert (at20["count"], at20["total_ms"]) == (1, 0.02)
    assert (at10["count"], at10["total_ms"]) == (2, 0.039)
    # float µs (Kineto's 3 decimals) that make 19.999999999 still count as 20
    tl = timeline(ops=[k(1000.1, 1000.2), k(1020.2, 1030.0)])
    assert analyze(tl, gap_us=20)["devices"]["0"]["idle_gaps"]["count"] == 1


def test_busy_pct_is_exact():
    # 3 ops of 25 µs in a 100 µs span, one pair overlapping by 5 µs: busy 70 µs
    tl = timeline(ops=[k(0, 25), k(20, 45, stream=2), k(75, 100)])
    d = analyze(tl)["devices"]["0"]
    assert d["busy_pct"] == 70.0  # [0, 45) and [75, 100): 70 of 100 and d["span_ms"] == 0.1 and d["busy_ms"] == 0.07


def test_percentiles_histogram_and_totals():
    # gaps of 10, 20, ..., 100 µs
    ops, t = [], 0.0
    for hole in range(10, 101, 10):
        ops.append(k(t, t + 5))
        t += 5 + hole
    ops.append(k(t, t + 5))
    d = analyze(timeline(ops=ops), gap_us=5)["devices"]["0"]
    gaps = d["idle_gaps"]
    # numpy linear (type 7): p50 between 50 and 60; p99 at rank 8.91 → 90 + 0.91 × 10
    assert (gaps["count"], gaps["total_ms"], gaps["p50_us"], gaps["p99_us"], gaps["max_us"]) == (10, 0.55, 55.0, 99.1, 100.0)
    hist = d["histogram"]
    assert hist["edges_us"] == [5.0, 10.0, 25.0, 50.0, 100.0, 250.0]
    # no launch in the trace: every gap is "other"
    assert hist["counts"]["other"] == [0, 2, 2, 5, 1]
    assert hist["counts"]["host-bound"] == [0, 0, 0, 0, 0]
    assert gaps_mod.histogram_edges(20.0, 1500.0).tolist() == [20, 40, 100, 200, 400, 1000, 2000]


def test_innermost_host_range_is_the_covering_range_that_started_last():
    tl = timeline(ranges=[("outer", 0, 100), ("inner", 10, 50), ("inner_short", 10, 30), ("sibling", 60, 70)])
    index = gaps_mod.InnermostRange(tl.ranges)
    at = index.at(np.array([-1, 5, 10, 25, 40, 55, 65, 99.9, 100]))
    assert [tl.names[i] if i >= 0 else None for i in at] == [None, "outer", "inner_short", "inner_short", "inner",
                                                              "outer", "sibling", "outer", None]
    by_name, outside = index.time_by_name(np.array([-10.0, 45.0]), np.array([20.0, 65.0]), len(tl.names))
    assert {tl.names[i]: v for i, v in enumerate(by_name) if v} == {"outer": 20.0, "inner_short": 10.0,
                                                                     "inner": 5.0, "sibling": 5.0}
    assert outside == 10.0


def test_find_gaps_on_no_ops():
    tl = timeline()
    ops = tl.devices.get(0) or timeline(ops=[k(0, 1)]).devices[0]
    empty = type(ops)(**{name: getattr(ops, name)[:0] for name in
                         ("start_us", "end_us", "kind", "name", "stream", "correlation")})
    g = gaps_mod.find_gaps(0, empty, gaps_mod.HostIndex(tl))
    assert len(g.start) == 0 and g.span_us == 0.0 and g.busy_us == 0.0


# ---- causes ----------------------------------------------------------------------------------------

def test_host_bound_the_launch_ended_after_the_gpu_went_idle():
    tl = timeline(ops=[k(0, 100, correlation=1), k(200, 300, correlation=2)],
                  calls=[("cudaLaunchKernel", -50, -40, 1), ("cudaLaunchKernel", 150, 180, 2)],
                  ranges=[("gpu_model_runner: sample", 90, 170)])
    gap = only_gap(analyze(tl))
    assert gap["cause"] == "host-bound"
    assert gap["reason"] == "cudaLaunchKernel ended 80.0 µs after the GPU went idle"
    assert gap["host_range"] == "gpu_model_runner: sample" and gap["host"] == "in 'gpu_model_runner: sample'"
    d = analyze(tl)["devices"]["0"]
    assert d["by_cause"]["host-bound"] == {"count": 1, "total_ms": 0.1, "share_pct": 100.0,
                                           "reasons": {"launch ended after the GPU went idle": {"count": 1, "total_ms": 0.1}}}
    # where the host was during the 100 µs: 70 µs in the sample range, 30 µs outside any range
    assert d["host_bound_by_range"] == [{"range": "gpu_model_runner: sample", "total_ms": 0.07, "share_pct": 70.0},
                                        {"range": None, "total_ms": 0.03, "share_pct": 30.0}]


def test_sync_memcpy_a_launch_long_before_and_a_stream_synchronize_during_the_gap():
    tl = timeline(ops=[k(0, 100, correlation=1), k(200, 300, correlation=2)],
                  calls=[("cudaLaunchKernel", -50, -40, 1), ("cudaLaunchKernel", 10, 20, 2),
                         ("cudaStreamSynchronize", 30, 150, -1)],
                  ranges=[("execute_model", 0, 400), ("gpu_model_runner: sample", 25, 160)])
    gap = only_gap(analyze(tl))
    assert (gap["cause"], gap["reason"]) == ("sync/memcpy", "cudaStreamSynchronize during the gap")
    # the innermost range at the gap's start, and the sync that returned inside the gap
    assert gap["host_range"] == "gpu_model_runner: sample" and gap["sync_call"] == "cudaStreamSynchronize"
    assert gap["host"] == "in 'gpu_model_runner: sample', after cudaStreamSynchronize"


@pytest.mark.parametrize("kind, where, reason", [
    (MEMCPY, "before", "memcpy/memset before the gap"),
    (MEMSET, "after", "memcpy/memset after the gap"),
])
def test_sync_memcpy_a_copy_next_to_the_gap(kind, where, reason):
    before = k(0, 100, name="Memcpy HtoD", kind=kind, correlation=1) if where == "before" else k(0, 100, correlation=1)
    after = k(200, 300, name="Memset", kind=kind, correlation=2) if where == "after" else k(200, 300, correlation=2)
    tl = timeline(ops=[before, after], calls=[("cudaMemcpyAsync", -50, -40, 1), ("cudaLaunchKernel", 10, 20, 2)])
    gap = only_gap(analyze(tl))
    assert (gap["cause"], gap["reason"]) == ("sync/memcpy", reason)


def test_communication_an_nccl_kernel_before_wins_over_a_late_launch():
    tl = timeline(ops=[k(0, 100, name="ncclDevKernel_AllReduce_Sum_bf16_RING_LL", correlation=1),
                       k(200, 300, correlation=2)],
                  calls=[("cudaLaunchKernel", -50, -40, 1), ("cudaLaunchKernel", 150, 180, 2)])
    gap = only_gap(analyze(tl))
    assert (gap["cause"], gap["reason"]) == ("communication", "NCCL kernel before the gap")


def test_communication_an_nccl_kernel_after_or_a_host_nccl_call():
    tl = timeline(ops=[k(0, 100, correlation=1), k(200, 300, name="NCCLKernel_x", correlation=2)],
                  calls=[("cudaLaunchKernel", -50, -40, 1), ("cudaLaunchKernel", 10, 20, 2)])
    assert only_gap(analyze(tl))["reason"] == "NCCL kernel after the gap"
    tl = timeline(ops=[k(0, 100, correlation=1), k(200, 300, correlation=2)],
                  calls=[("cudaLaunchKernel", -50, -40, 1), ("cudaLaunchKernel", 10, 20, 2),
                         ("ncclAllReduce", 120, 130, -1)])
    gap = only_gap(analyze(tl))
    assert (gap["cause"], gap["reason"]) == ("communication", "host in ncclAllReduce")


def test_other_launch_not_in_the_trace_and_queued():
    no_launch = timeline(ops=[k(0, 100, correlation=1), k(200, 300, correlation=2)])
    gap = only_gap(analyze(no_launch))
    assert (gap["cause"], gap["reason"]) == ("other", "launch not in the trace")
    queued = timeline(ops=[k(0, 100, correlation=1), k(200, 300, correlation=2)],
                      calls=[("cudaLaunchKernel", 10, 20, 2)])
    gap = only_gap(analyze(queued))
    assert (gap["cause"], gap["reason"]) == ("other", "queued, cause not in the trace")
    by = analyze(no_launch)["devices"]["0"]["by_cause"]["other"]
    assert by["reasons"] == {"launch not in the trace": {"count": 1, "total_ms": 0.1}}


def test_a_graph_launch_correlation_is_shared_by_its_kernels():
    # one cudaGraphLaunch [0, 50) queues 3 kernels; an earlier kernel ends at 10: the gap before the
    # graph is host-bound (the launch ended at 50), the gaps inside it were queued
    tl = timeline(ops=[k(0, 10, name="prev", correlation=6), k(60, 100, name="g1", correlation=7),
                       k(130, 160, name="g2", correlation=7), k(200, 230, name="g3", correlation=7)],
                  calls=[("cudaLaunchKernel", -20, -10, 6), ("cudaGraphLaunch", 0, 50, 7)])
    d = analyze(tl)["devices"]["0"]
    causes = {(g["start_us"], g["cause"], g["reason"].split(" ended")[0]) for g in d["worst_gaps"]}
    assert causes == {(10.0, "host-bound", "cudaGraphLaunch"), (100.0, "other", "queued, cause not in the trace"),
                      (160.0, "other", "queued, cause not in the trace")}
    assert d["by_cause"]["host-bound"]["total_ms"] == 0.05 and d["by_cause"]["other"]["total_ms"] == 0.07


def test_cause_share_and_order_of_rules_over_many_gaps():
    # four gaps: one host-bound of 200 µs, two of 100 µs next to an NCCL kernel, one of 100 µs with a sync
    ops = [k(0, 100, correlation=1), k(300, 400, correlation=2), k(500, 600, name="nccl_k", correlation=3),
           k(700, 800, correlation=4), k(900, 1000, correlation=5)]
    calls = [("cudaLaunchKernel", -9, -8, 1), ("cudaLaunchKernel", 250, 260, 2), ("cudaLaunchKernel", -7, -6, 3),
             ("cudaLaunchKernel", -5, -4, 4), ("cuStreamSynchronize", 810, 820, -1)]
    by = analyze(timeline(ops=ops, calls=calls))["devices"]["0"]["by_cause"]
    # [100, 300) host-bound; [400, 500) and [600, 700) next to NCCL; [800, 900): the op after it has no
    # launch in the trace ("other") but a sync call during the gap comes first: sync/memcpy
    assert {c: (v["count"], v["total_ms"], v["share_pct"]) for c, v in by.items()} == {
        "communication": (2, 0.2, 40.0), "host-bound": (1, 0.2, 40.0), "sync/memcpy": (1, 0.1, 20.0),
        "other": (0, 0.0, 0.0)}


def test_sync_call_names_nsys_suffixes_and_async_copies():
    for name in ("cudaStreamSynchronize", "cudaStreamSynchronize_v3020", "cudaDeviceSynchronize",
                 "cudaEventSynchronize", "cudaStreamWaitEvent", "cudaMemcpy", "cudaMemcpy_v3020",
                 "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize", "cuStreamWaitEvent",
                 "cuMemcpyDtoH_v2", "cuStreamSynchronize_ptsz"):
        assert gaps_mod.is_sync_call(name), name
    for name in ("cudaMemcpyAsync", "cudaMemcpyAsync_v3020", "cuMemcpyHtoDAsync_v2", "cudaLaunchKernel",
                 "cudaStreamSynchronizeX"):
        assert not gaps_mod.is_sync_call(name), name


# ---- steps ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, kind, counts", [
    ("execute_context_0(0)_generation_8(8)", "decode", (0, 0, 8, 8)),
    ("execute_context_2(1024)_generation_0(0)", "prefill", (2, 1024, 0, 0)),
    ("execute_context_1(512)_generation_6(6)", "mixed", (1, 512, 6, 6)),
    ("execute_context_0(0)_generation_0(0)", "empty", (0, 0, 0, 0)),
    ("execute_context_0(sq0sk0sqsq0sqsk0)_generation_4(sq4sk2048sqsq4sqsk2048)", "decode", (0, 0, 4, 4)),
    ("execute_1028_context_1(sq1024sk1024sqsq1048576sqsk1048576)_generation_4(sq4sk900sqsq4sqsk900)",
     "mixed", (1, 1024, 4, 4)),
    ("execute_context_3(sq300sk300sqsq30000sqsk30000)_generation_0(sq0sk0sqsq0sqsk0)", "prefill", (3, 300, 0, 0)),
])
def test_step_kinds_from_simple_and_detailed_annotations(label, kind, counts):
    tl = timeline(ops=[k(10, 50, correlation=1)], calls=[("cudaLaunchKernel", 1, 5, 1)], ranges=[(label, 0, 60)])
    steps = analyze(tl)["steps"]
    assert steps["count"] == 1 and steps["kinds"] == {kind: 1}
    worst = steps["worst"][0]
    assert (worst["context"], worst["context_tokens"], worst["generation"], worst["generation_tokens"]) == counts
    assert worst["label"] == label and worst["kind"] == kind


def test_a_user_step_pattern_with_and_without_counts():
    tl = timeline(ops=[k(10, 50), k(110, 150)], ranges=[("step[3 ctx, 9 gen]", 0, 60), ("step[0 ctx, 9 gen]", 100, 160)])
    counted = analyze(tl, step_pattern=r"step\[(\d+) ctx, (\d+) gen\]")
    assert counted["steps"]["count"] == 2  # two groups only: counts unknown
    assert counted["steps"]["kinds"] == {"unknown": 2}
    named = analyze(tl, step_pattern=r"step\[(?P<context>\d+) ctx, (?P<generation>\d+) gen\]"
                                     r"(?P<context_tokens>)(?P<generation_tokens>)")
    # the token groups match nothing: those counts are unknown, the request counts still give the kinds
    assert named["steps"]["kinds"] == {"decode": 1, "mixed": 1}
    assert named["steps"]["worst"][0]["context_tokens"] is None
    assert named["steps"]["decode"]["batch"] == {"p50": 9.0, "min": 9, "max": 9}
    assert counted["steps"]["all"]["batch"] is None  # no counts: no batch
    assert analyze(tl, step_pattern="nothing-matches")["steps"]["count"] == 0
    steps = find_steps(tl, compile_pattern(r"step\["))
    assert len(steps) == 2 and steps.kind.tolist() == [4, 4]


def decode_loop(n=50, slow: dict[int, float] | None = None, device=0, wall_offset_us=WALL_OFFSET_US,
                extra_ops=()):
    """n decode steps of 5 ms: 1 ms the GPU waits on the host (its launch ends 1 ms into the step;
    the host is in 'gpu_model_runner: sample' meanwhile), then 3 ms of gemm and 1 ms of attn.
    slow: step → extra host-bound µs."""
    slow = slow or {}
    ops = [k(-100, 0, name="warmup", device=device, correlation=1)]  # so step 0 also waits 1 ms
    calls = [("cudaLaunchKernel", -300, -290, 1)]
    ranges = []
    t, corr = 0.0, 10
    for i in range(n):
        wait = 1000.0 + slow.get(i, 0.0)
        ranges += [("execute_context_0(0)_generation_8(8)", t, t + wait + 200),
                   ("gpu_model_runner: sample", t, t + wait)]
        calls += [("cudaLaunchKernel", t + wait - 10, t + wait, corr), ("cudaLaunchKernel", t + wait - 5, t + wait, corr + 1)]
        ops += [k(t + wait, t + wait + 3000, name="gemm", device=device, correlation=corr),
                k(t + wait + 3000, t + wait + 4000, name="attn", device=device, correlation=corr + 1)]
        t += wait + 4000
        corr += 2
    return timeline(ops=[*ops, *extra_ops], calls=calls, ranges=ranges, wall_offset_us=wall_offset_us)


def test_decode_loop_wall_gpu_and_host_wait_are_exact():
    result = analyze(decode_loop())
    steps = result["steps"]
    assert steps["count"] == 50 and steps["kinds"] == {"decode": 50} and steps["device"] == 0
    decode = steps["decode"]
    assert decode["count"] == 50 and decode["wall_ms"] == 250.0
    assert decode["step_ms"] == {"p50": 5.0, "p99": 5.0, "mean": 5.0}
    assert decode["gpu_ms"] == {"p50": 4.0, "mean": 4.0}
    assert decode["host_wait_ms"] == {"p50": 1.0, "mean": 1.0}
    assert decode["host_wait_pct"] == 20.0 and decode["gpu_busy_pct"] == 80.0
    assert decode["batch"] == {"p50": 8.0, "min": 8, "max": 8}  # the annotations' generation requests
    assert steps["all"] == decode
    assert steps["top_kernels"] == [
        {"name": "gemm", "kind": "kernel", "total_ms": 150.0, "share_pct": 75.0, "count": 50, "per_step": 1.0,
         "ms_per_step": 3.0},
        {"name": "attn", "kind": "kernel", "total_ms": 50.0, "share_pct": 25.0, "count": 50, "per_step": 1.0,
         "ms_per_step": 1.0}]
    d = result["devices"]["0"]
    assert d["idle_gaps"]["count"] == 50 and d["by_cause"]["host-bound"]["share_pct"] == 100.0
    assert result["trace"]["wall_start_unix_s"] == pytest.approx(1_700_000_000.0 - 100e-6, abs=1e-6)
    assert any("decode step 5.00 ms (p50, mean 5.00 ms) at a batch of 8 requests (p50)," in f
               and "(20.0 % of decode step time)" in f for f in result["findings"])
    assert any("while it waited on the host, the host was mostly in 'gpu_model_runner: sample' (100 %" in f
               for f in result["findings"])


def test_worst_steps_with_their_wall_time_host_and_kernels():
    result = analyze(decode_loop(slow={17: 3000.0, 30: 1000.0}))
    steps = result["steps"]
    worst = steps["worst"]
    assert len(worst) == 5 and [w["index"] for w in worst[:2]] == [17, 30]
    w = worst[0]
    start = 17 * 5000.0
    assert (w["start_us"], w["end_us"], w["step_ms"], w["gpu_ms"], w["host_wait_ms"]) == (start, start + 8000, 8.0, 4.0, 4.0)
    assert w["wall_start_unix_s"] == pytest.approx((WALL_OFFSET_US + start) / 1e6, abs=1e-6)
    assert (w["top_host"], w["top_host_ms"]) == ("gpu_model_runner: sample", 4.0)
    assert w["top_kernels"] == [{"name": "gemm", "ms": 3.0}, {"name": "attn", "ms": 1.0}]
    assert w["label"] == "execute_context_0(0)_generation_8(8)"
    # 4 ms more host wait over 254 ms
    assert steps["decode"]["host_wait_pct"] == round(54 / 254 * 100, 3)
    assert any("worst steps while the host was in 'gpu_model_runner: sample'" in f for f in result["findings"])
    assert analyze(decode_loop(wall_offset_us=None))["steps"]["worst"][0]["wall_start_unix_s"] is None


def test_the_last_step_lasts_until_its_gpu_work_ends():
    """The GPU work of a step runs after the host has left its range; the last step has no next
    start, so it lasts until the last op that started after its start ends (or its range's end)."""
    label = "execute_context_0(0)_generation_8(8)"
    ops = [k(500, 4000), k(5500, 9000), k(10_500, 14_000, name="sample")]
    short = analyze(timeline(ops=ops, ranges=[(label, 0, 100), (label, 5000, 5100), (label, 10_000, 10_100)]))
    assert short["steps"]["all"]["wall_ms"] == 14.0 and short["steps"]["worst"][0]["index"] == 0
    long = analyze(timeline(ops=ops, ranges=[(label, 0, 100), (label, 5000, 5100), (label, 10_000, 20_000)]))
    assert long["steps"]["worst"][0]["index"] == 2 and long["steps"]["worst"][0]["step_ms"] == 10.0


def test_two_devices_steps_measure_the_busiest():
    small = [k(5000.0 * i + 1000, 5000.0 * i + 1500, name="aux", device=1) for i in range(50)]
    result = analyze(decode_loop(extra_ops=small))
    assert set(result["devices"]) == {"0", "1"}
    assert result["devices"]["1"]["busy_ms"] == 25.0
    steps = result["steps"]
    assert steps["device"] == 0 and "busiest" in steps["device_note"]
    assert steps["decode"]["host_wait_pct"] == 20.0
    assert any(f.startswith("GPU 1 busy") for f in result["findings"])


def test_no_step_annotations_and_an_empty_timeline():
    result = analyze(timeline(ops=[k(0, 10), k(100, 110)]))
    assert result["steps"] == {"count": 0, "note": NO_STEPS_NOTE, "pattern": result["steps"]["pattern"]}
    assert NO_STEPS_NOTE in result["findings"]
    empty = analyze(timeline())
    assert empty["devices"] == {} and empty["steps"]["count"] == 0
    assert empty["trace"]["span_ms"] is None and empty["trace"]["wall_start_unix_s"] is None
    assert NO_GPU_FINDING in empty["findings"]
    text = render_text(empty)
    assert NO_GPU_FINDING in text and "steps: no step annotations" in text
    json.dumps(empty, allow_nan=False)


def test_steps_without_gpu_activity():
    result = analyze(timeline(ranges=[("execute_context_0(0)_generation_8(8)", 0, 100)]))
    assert result["steps"]["count"] == 1 and result["steps"]["device"] is None
    assert result["steps"]["decode"]["gpu_busy_pct"] == 0.0
    render_text(result)


def test_result_is_plain_json_and_the_text_has_the_tables():
    result = analyze(decode_loop(slow={3: 500.0}))
    again = json.loads(json.dumps(result, allow_nan=False))
    assert again == result
    text = render_text(result)
    for part in ("GPU 0: busy", "idle gaps ≥ 20 µs: 50", "host-bound", "worst gaps:", "steps: 50 (decode 50)",
                 "top kernels over decode steps:", "worst decode steps:", "findings:"):
        assert part in text, part
    assert finite({"a": [float("nan"), 1.0, float("inf")], "b": {"c": -float("inf")}}) == {"a": [None, 1.0, None],
                                                                                          "b": {"c": None}}


def test_bad_arguments_to_analyze():
    with pytest.raises(ValueError):
        analyze(timeline(), gap_us=0)
    with pytest.raises(ValueError):
        analyze(timeline(), top=0)


# ---- the command end to end ----------------------------------------------------------------------

def kineto_trace(path, gz=False, steps=20):
    """A Kineto-shaped trace: per step a user_annotation, two cudaLaunchKernel calls, two kernels;
    the GPU waits 1 ms on the host at the start of each 5 ms step."""
    events, corr, t = [], 1, 1000.0
    for _ in range(steps):
        events.append({"ph": "X", "cat": "user_annotation", "name": "execute_context_0(0)_generation_8(8)",
                       "pid": 1, "tid": 1, "ts": t, "dur": 1200.0})
        for offset, dur, name in ((1000.0, 3000.0, "gemm"), (4000.0, 1000.0, "attn")):
            events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                           "ts": t + 990.0, "dur": 10.0, "args": {"correlation": corr}})
            events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": t + offset,
                           "dur": dur, "args": {"device": 0, "stream": 7, "correlation": corr}})
            corr += 1
        t += 5000.0
    doc = {"schemaVersion": 1, "traceEvents": events, "baseTimeNanoseconds": 1_700_000_000_000_000_000}
    data = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def run_cli(capsys, *argv):
    code = cli.main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_text_and_json(tmp_path, capsys):
    trace = kineto_trace(tmp_path / "rank0.pt.trace.json")
    code, out, err = run_cli(capsys, trace)
    assert code == 0 and err == ""
    assert "GPU 0: busy" in out and "steps: 20 (decode 20)" in out and "findings:" in out
    code, out, err = run_cli(capsys, kineto_trace(tmp_path / "rank0.pt.trace.json.gz", gz=True), "--json",
                             "--gap-us", "50", "--top", "4")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert set(result) == {"trace", "gap_us", "devices", "steps", "findings"}
    assert result["gap_us"] == 50.0 and result["trace"]["source"] == "pytorch"
    d = result["devices"]["0"]
    assert {"busy_pct", "idle_gaps", "by_cause", "histogram", "worst_gaps"} <= set(d)
    assert {"count", "total_ms", "p50_us", "p99_us"} <= set(d["idle_gaps"])
    # 19 host-bound gaps of 1 ms between 20 steps (the first step has nothing before it)
    assert d["idle_gaps"]["count"] == 19 and d["by_cause"]["host-bound"]["count"] == 19 and len(d["worst_gaps"]) == 4
    steps = result["steps"]
    assert steps["count"] == 20 and steps["decode"]["step_ms"]["p50"] == 5.0 and len(steps["worst"]) == 2
    assert steps["decode"]["host_wait_pct"] == 19.0  # 19 ms of 100 ms
    assert result["trace"]["wall_start_unix_s"] == pytest.approx(1_700_000_000.002, abs=1e-6)


@pytest.mark.parametrize("argv, says", [
    (["{missing}"], "no such file"),
    (["{trace}", "--gap-us", "0"], "--gap-us"),
    (["{trace}", "--gap-us", "-5"], "--gap-us"),
    (["{trace}", "--gap-us", "nan"], "--gap-us"),
    (["{trace}", "--gap-us", "abc"], "--gap-us"),
    (["{trace}", "--top", "0"], "--top"),
    (["{trace}", "--step-pattern", "execute_(("], "--step-pattern"),
    (["{text}"], "not a trace"),
    (["{tmp}"], "directory"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    trace = kineto_trace(tmp_path / "t.json", steps=2)
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a trace\n")
    names = {"missing": tmp_path / "nope.json", "trace": trace, "text": text, "tmp": tmp_path}
    code, out, err = run_cli(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith("gpucert: error: ") and err.count("\n") == 1, err
    assert says in err, err


# ---- scale ------------------------------------------------------------------------------------------

@pytest.mark.slow("two million trace ops")
def test_two_million_ops_are_analyzed_with_columns_not_loops():
    """Not a timing assertion: it must finish (seconds), and its figures must add up."""
    n_steps, per_step = 20_000, 100  # 2,000,000 kernels, a launch each, a step annotation per 100
    builder = TimelineBuilder("pytorch", "big.json")
    rng = np.random.default_rng(7)
    durations = rng.uniform(5.0, 40.0, size=n_steps * per_step)
    holes = np.where(rng.random(n_steps * per_step) < 0.05, rng.uniform(20.0, 400.0, n_steps * per_step),
                     rng.uniform(0.0, 5.0, n_steps * per_step))
    names = [f"kernel_{i}" for i in range(40)] + ["ncclDevKernel_AllReduce"]
    started = time.perf_counter()
    t, op = 0.0, 0
    for step in range(n_steps):
        step_start = t
        if step % 2:  # a nested host range in every other step: the innermost-range index at scale
            builder.host_range("gpu_model_runner: sample", t - 20.0, t + 50.0)
        for j in range(per_step):
            end = t + durations[op]
            builder.host_call("cudaLaunchKernel", t - 30.0, t - 25.0 + (holes[op] if j == 0 else 0.0), op + 1)
            builder.device_op(0, KERNEL, names[op % len(names)], t, end, stream=7 + (j % 2), correlation=op + 1)
            t = end + holes[op]
            op += 1
        builder.host_range("execute_context_0(0)_generation_64(64)", step_start, t)
    tl = builder.build()
    built = time.perf_counter() - started
    started = time.perf_counter()
    result = analyze(tl)
    took = time.perf_counter() - started
    print(f"\n2,000,000 ops: built in {built:.1f} s, analyzed in {took:.2f} s")
    d = result["devices"]["0"]
    assert d["ops"]["total"] == 2_000_000
    assert result["steps"]["count"] == n_steps
    assert d["idle_gaps"]["count"] == int(np.sum(holes[:-1] >= 20.0 - 1e-6))
    causes = d["by_cause"]
    assert sum(c["count"] for c in causes.values()) == d["idle_gaps"]["count"]
    assert d["busy_pct"] == pytest.approx(durations.sum() / (t - holes[-1]) * 100, abs=1e-3)
