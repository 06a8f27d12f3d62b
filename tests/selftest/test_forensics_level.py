"""forensics.level: what the monitor saw of a served level between the engine's steps — the GPU's
idle share, its idle runs and the engine's share under a batch floor — on known samples and on
real ones from an H100 (tests/fixtures/monitor); and the engine's own mean step from vLLM's
inter-token latency histogram (its sum and count as the monitor sampled them)."""

from pathlib import Path

import numpy as np
import pytest

from gpucert.forensics.level import engine_itl, idle_between_steps, running_peak, sentence

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "monitor" / "h100-served-c256-waves.npz"


def samples(n=100, idle=(), running=None, second_gpu=None):
    """n samples 100 ms apart; GPU 0 at 50 % but 0 at the `idle` indices."""
    util = np.full(n, 50.0)
    util[list(idle)] = 0.0
    columns = {"t": np.arange(n) * 0.1, "gpu0.util_gpu_pct": util}
    if second_gpu is not None:
        columns["gpu1.util_gpu_pct"] = second_gpu
    if running is not None:
        columns["vllm.running"] = running
    return columns


def test_idle_share_runs_and_their_median_length_are_exact():
    figures = idle_between_steps(samples(idle=[*range(10, 20), *range(50, 55)]), floor=128)
    assert figures["gpu_idle_pct"] == 15.0
    # runs of 10 and 5 samples: 1.0 and 0.5 s (first to last sample plus one interval)
    assert figures["idle_runs"] == 2 and figures["idle_run_s_p50"] == pytest.approx(0.75)
    assert figures["below_floor_pct"] is None  # no engine gauge


def test_every_gpu_must_be_idle_and_samples_without_a_reading_are_left_out():
    second = np.full(100, 0.0)
    second[15] = 30.0  # GPU 1 ran a kernel in the middle of GPU 0's first idle run
    second[60] = np.nan  # and had no reading once
    figures = idle_between_steps(samples(idle=[*range(10, 20), 60], second_gpu=second), floor=1)
    assert figures["idle_runs"] == 2  # 10-14 and 16-19; sample 60 has no reading from GPU 1
    assert figures["gpu_idle_pct"] == pytest.approx(9 / 99 * 100, abs=1e-3)


def test_the_engines_share_under_the_floor():
    running = np.array([256.0] * 80 + [2.0] * 15 + [np.nan] * 5)
    figures = idle_between_steps(samples(running=running), floor=128)
    assert figures["below_floor_pct"] == pytest.approx(15 / 95 * 100, abs=1e-3)
    assert figures["gpu_idle_pct"] == 0.0 and figures["idle_runs"] == 0 and figures["idle_run_s_p50"] is None
    assert "vLLM ran under 128 requests in 16 % of them" in sentence(figures)
    assert running_peak(samples(running=running)) == 256.0  # the level's batch a window is held to
    assert running_peak(samples()) is None and running_peak(None) is None
    assert running_peak(samples(running=np.full(100, np.nan))) is None


def test_nothing_to_read_is_none():
    assert idle_between_steps(None, 1) is None and idle_between_steps({"t": np.array([])}, 1) is None
    assert sentence(idle_between_steps({"t": np.arange(3.0)}, 1)) is None  # samples, but no GPU or gauge


def test_an_h100s_served_level_idles_between_its_waves():
    """Real samples (session 32): the GPU idle in about a quarter of them, a second at a time."""
    columns = dict(np.load(FIXTURE))
    figures = idle_between_steps(columns, floor=128)
    util = columns["gpu0.util_gpu_pct"]
    assert figures["samples"] == len(util) == 195
    assert figures["gpu_idle_pct"] == pytest.approx(100 * sum(1 for u in util if u == 0) / len(util), abs=1e-3)
    assert 20 <= figures["gpu_idle_pct"] <= 35, figures
    assert figures["idle_runs"] >= 3 and 0.5 <= figures["idle_run_s_p50"] <= 1.5, figures
    assert 5 <= figures["below_floor_pct"] <= 25, figures
    assert sentence(figures).startswith("Between steps, in the unprofiled level: the GPU ran no kernel in")


def itl_samples(steps_ms, running, per_sample=256):
    """Cumulative histogram sum (s) and count as the monitor samples them: between two samples
    `per_sample` tokens each waited steps_ms[i] ms (NaN: no scrape answered yet)."""
    d_sum = np.asarray(steps_ms, dtype=float) / 1e3 * per_sample
    total = np.concatenate(([5.0], 5.0 + np.cumsum(d_sum)))  # a server up before the level: nonzero start
    count = np.concatenate(([1000.0], 1000.0 + np.cumsum(np.full(len(d_sum), float(per_sample)))))
    return {"t": np.arange(len(total)) * 0.1, "vllm.itl_sum_s": total, "vllm.itl_count": count,
            "vllm.running": np.asarray(running, dtype=float)}


def test_the_engines_mean_step_is_its_histograms_sum_over_count_at_the_floor():
    # 6 ms steps at 256 running; a wave's trough (40 running, 30 ms: its prefills) is left out
    columns = itl_samples([6, 6, 30, 30, 6, 6], [256, 256, 256, 40, 256, 256, 256])
    got = engine_itl(columns, floor=128)
    assert got["itl_ms_mean"] == pytest.approx(6.0) and got["tokens"] == 4 * 256 and got["pairs"] == 4, got
    # with no floor every pair counts: the mean of the tokens' waits
    assert engine_itl(columns, floor=0)["itl_ms_mean"] == pytest.approx((4 * 6 + 2 * 30) / 6)


def test_a_counter_that_went_back_or_no_reading_is_left_out_and_nothing_is_none():
    columns = itl_samples([6, 6, 6, 6], [256] * 5)
    columns["vllm.itl_count"][3] = 10.0  # another API-server process answered: its counters are its own
    columns["vllm.itl_sum_s"][3] = 0.1
    columns["vllm.itl_sum_s"][1] = np.nan  # no scrape yet
    got = engine_itl(columns, floor=128)
    # samples 1 (no reading) and 3 (below sample 2) are left out: pairs 0→2 and 2→4, 6 ms each
    assert got["itl_ms_mean"] == pytest.approx(6.0) and got["pairs"] == 2 and got["tokens"] == 4 * 256, got
    assert engine_itl(itl_samples([6], [np.nan, np.nan]), floor=128) is None  # no running gauge: not steady
    assert engine_itl({"t": np.arange(3), "vllm.running": np.full(3, 256.0)}, floor=1) is None  # no histogram
    assert engine_itl(None, floor=1) is None
    flat = itl_samples([6, 6], [256] * 3)
    flat["vllm.itl_count"][:] = 7.0  # no token in the stretch
    assert engine_itl(flat, floor=1) is None
