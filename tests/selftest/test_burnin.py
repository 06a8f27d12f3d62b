"""`make burnin` rehearsed on the CPU (`--burnin-devices cpu,cpu`: two ranks, gloo for the
all-reduce): the phases, the sustained figures against the burst, the time series for the card,
and the faults a burn-in is for — a GPU that runs slow is named, a GPU that dies is reported with
what it measured while the others complete (planted through the engine's test hook)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpucert.physics import burnin, core
from gpucert.physics.gemm import Gemm
from . import fake_pynvml
from .rules import thresholds_with

REPO = Path(__file__).resolve().parents[2]


# two ranks sharing two busy cores differ by up to a third (a GPU node's differ by a few %): the
# rehearsal names an outlier 50 % below the median, not thresholds.yaml's 10 %
CPU_OUTLIER_RULE = {"check": "burnin", "metric": "vs_median_tflops_pct", "min": -50, "warn_min": -40}


def pytest_burnin(tmp_path, *args, fault: dict | None = None, env: dict | None = None):
    thresholds = thresholds_with(tmp_path, CPU_OUTLIER_RULE)
    cmd = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "tests/burnin", "-m", "burnin",
           "-p", "no:cacheprovider", "-q", f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}",
           f"--thresholds={thresholds}", "--burnin-devices", "cpu,cpu", "--burnin-min", "0.08", *args]
    env = {**os.environ, **({"GPUCERT_BURNIN_FAULT": json.dumps(fault)} if fault else {}), **(env or {})}
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    path = tmp_path / "r" / "metrics.json"
    return run, (json.loads(path.read_text()) if path.exists() else None)


def by_gpu(check: dict) -> dict:
    out: dict = {}
    for m in check["metrics"]:
        gpu = m.get("params", {}).get("gpu")
        out.setdefault(None if gpu is None else int(gpu), {})[m["metric"]] = m
    return out


@pytest.mark.slow("gloo ranks under sustained load")
def test_a_rehearsal_measures_every_phase_on_every_rank(tmp_path):
    run, metrics = pytest_burnin(tmp_path, "-k", "test_burnin")
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("gpucert: BURN-IN PASSED no-gpu — 1 checks"), run.stdout[-500:]
    (check,) = metrics["checks"]
    gpus = by_gpu(check)
    for rank in (0, 1):
        got = gpus[rank]
        for name in ("sustained_tflops", "sustained_gbps", "together_tflops", "together_gbps", "burst_tflops",
                     "allreduce_busbw_gbps", "tflops_of_burst_pct", "vs_median_tflops_pct"):
            assert got[name]["value"] is not None and got[name]["status"] == "ok", (rank, name, got.get(name))
        # a percentage of the burst figure: on two shared cores burst and sustained swing apart by up
        # to a few times (CI under load: 241 %); a fraction (≈1) or a double ×100 (≈10,000) is out
        assert 10 < got["tflops_of_burst_pct"]["value"] < 1000
    assert abs(gpus[0]["vs_median_tflops_pct"]["value"] + gpus[1]["vs_median_tflops_pct"]["value"]) < 1e-6
    card = (tmp_path / "r" / "report.html").read_text()
    assert '<section id="burnin">' in card and "GPU 1 passed: sustained" in card, card[-2000:]
    overlays = check["monitor"]["overlays"]  # drawn over the monitor's charts on the card
    assert {"GPU 0 gemm TFLOP/s", "GPU 1 hbm GB/s", "GPU 1 together TFLOP/s"} <= set(overlays), list(overlays)
    series = overlays["GPU 0 gemm TFLOP/s"]
    assert len(series["t_s"]) >= 3 and series["t_s"] == sorted(series["t_s"]) and all(v > 0 for v in series["values"])


@pytest.mark.fault("burn-in", "rank 1 of a two-rank CPU rehearsal doing each GEMM 20 times (a GPU 20× slower)",
                   "vs_median_tflops_pct fails for rank 1 (−90 %), not rank 0; the slowest GPU named; exit 1")
@pytest.mark.slow("gloo ranks under sustained load")
def test_a_gpu_that_runs_slow_is_named_and_fails(tmp_path):
    # rank 1 does each GEMM 20 times: 1/20 of rank 0's figure, 90 % below the pair's median (−50
    # fails). Not 5×: beside other self-tests on two cores the ranks do not get equal shares of the
    # CPU, and 5× read −47 % there (session 38's fault-table run)
    run, metrics = pytest_burnin(tmp_path, "-k", "test_burnin", fault={"rank": 1, "slow_factor": 20})
    assert run.returncode == 1, run.stdout[-3000:]
    (check,) = metrics["checks"]
    gpus = by_gpu(check)
    assert gpus[1]["vs_median_tflops_pct"]["verdict"] == "fail", gpus[1]["vs_median_tflops_pct"]
    assert gpus[0]["vs_median_tflops_pct"]["verdict"] != "fail"
    notices = [row["notice"] for row in check["findings"]["burnin"] if row.get("notice")]
    assert any(n.startswith("slowest GPU: 1 (") for n in notices), notices


@pytest.mark.slow("gloo ranks under sustained load")
def test_a_gpu_that_dies_is_reported_and_the_other_completes(tmp_path):
    started = time.monotonic()
    run, metrics = pytest_burnin(tmp_path, "-k", "test_burnin", fault={"rank": 1, "exit_after_s": 1.5})
    assert run.returncode == 1, run.stdout[-3000:]
    assert time.monotonic() - started < 240
    (check,) = metrics["checks"]
    assert check["outcome"] == "failed" and "rank 1 exited with status 70" in check["message"], check["message"]
    gpus = by_gpu(check)
    assert gpus[0]["sustained_tflops"]["value"] > 0 and gpus[0]["together_tflops"]["value"] > 0
    assert gpus[1]["sustained_tflops"]["status"] == "error"
    # the survivor's all-reduce had no peer: an error of its own, reported
    assert gpus[0]["allreduce_busbw_gbps"]["status"] == "error", gpus[0]["allreduce_busbw_gbps"]


@pytest.mark.parametrize("args, message", [
    (["--burnin-min", "0"], "--burnin-min must be a positive number of minutes, got 0"),
    (["--burnin-dtype", "int4"], "--burnin-dtype must be one of fp8, bf16, fp16, tf32, fp32, got 'int4'"),
])
def test_bad_burnin_options_are_one_line(tmp_path, args, message):
    run, _ = pytest_burnin(tmp_path, *args)
    assert run.returncode == 4 and message in run.stdout + run.stderr, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_the_sustained_timing_loop_blocks_and_warms_up():
    """core.time_sustained: an untimed warm-up, then ~block_s blocks of back-to-back
    iterations until sustain_s, each stamped; the Result says it is a sustained figure."""
    times: list[float] = []
    started = time.monotonic()
    result = core.measure(Gemm("fp32", 64, 64, 64), "cpu", sustain_s=0.6, warmup_s=0.3, timeline=times)
    assert result.status == "ok" and "sustained: 0.3 s warm-up" in result.note, result.note
    # no sample from the warm-up: the first stamp follows the calibration (≥ a quarter block) and
    # the 0.3 s warm-up. Not "+ half a block": a block sized while the calibration ran under load
    # ends sooner once the load lifts (make test beside two hogs: 0.343 s)
    assert times[0] - started >= 0.3 + 0.1 / 4
    # How many ~0.1 s blocks fit the 0.6 s is the box's to say, not this test's: a block sized while
    # the CPU was free took 3.7 s when four xdist workers and two hogs shared the two cores (2 blocks),
    # and once over 0.6 s (1 block). What load cannot change: one stamp per sample, in order, and no
    # stop before the sustain is over. The block sizing itself is test_blocks_follow_the_last_blocks_time.
    assert 1 <= len(result.samples_s) <= 40 and len(times) == len(result.samples_s), result.samples_s
    assert times[-1] - started >= 0.3 + 0.6 and times == sorted(times)


@pytest.mark.parametrize("per_block, took_s, counted, expected", [
    (100, 0.10, None, 100),   # on target: kept
    (100, 0.19, None, 100),   # within 2x: kept (no see-saw around block_s)
    (100, 0.45, None, 25),    # a block 4.5x too long: halved until ≤ 2x
    (100, 3.7, None, 3),      # a shared CPU (the 3.7 s block above): 100 → 3
    (100, 0.04, None, 200),   # under half: doubled
    (1, 5.0, None, 1),        # never below one iteration
    (100, 0.10, 400, 200),    # the time was of 400 iterations (the CUDA path's previous block): doubled
    (100, 0.10, 25, 50),      # ... of 25 iterations: halved
])
def test_blocks_follow_the_last_blocks_time(per_block, took_s, counted, expected):
    assert core._rescaled(per_block, took_s, 0.1, counted) == expected


def test_outliers_and_sustained_fractions():
    assert burnin.outliers({0: 100.0}) == {}
    gaps = burnin.outliers({0: 100.0, 1: 100.0, 2: 80.0, 3: None})
    assert gaps == {0: 0.0, 1: 0.0, 2: -20.0}
    figures = burnin.sustained({"burst": {"gemm_tflops": 800.0, "hbm_gbps": 4000.0},
                                "phases": {"gemm": {"median": 680.0}, "hbm": {"median": 3800.0},
                                           "together": {"median": 600.0, "median_gbps": 3000.0}}})
    assert figures["tflops_of_burst_pct"] == pytest.approx(85.0) and figures["gbps_of_burst_pct"] == pytest.approx(95.0)
    assert figures["together_work_pct"] == pytest.approx((600 / 680 + 3000 / 3800) * 100)


@pytest.mark.fault("burn-in", "an H100's together phase (GEMM and copy sharing the GPU: 38 % and 44 % of the "
                   "datasheet), and one that keeps 85 % or −19 % of both", "the healthy one is not failed by the "
                   "alone figures' datasheet floors; together_work_pct warns below 90 and fails against its baseline")
def test_the_together_phase_is_judged_by_what_both_keep_not_by_the_datasheet():
    """GEMM and copy at once share one GPU: on the H100 of session 17, 379 TFLOP/s beside
    1,482 GB/s (38 % and 44 % of the datasheet) while alone each held 675 and 3,026 — a healthy
    GPU the datasheet floors of the alone figures failed. The shipped thresholds judge their sum of
    shares instead: too little of both warns on any node and fails against the node's baseline."""
    from gpucert import thresholds
    from gpucert.judge import judge
    from gpucert.metrics import Metric

    shipped = thresholds.load(Path(__file__).parents[2] / "thresholds.yaml")
    figures = burnin.sustained({"burst": {"gemm_tflops": 793.9, "hbm_gbps": 3023.5},
                                "phases": {"gemm": {"median": 675.5}, "hbm": {"median": 3026.1},
                                           "together": {"median": 379.4, "median_gbps": 1482.1}}})
    assert figures["together_work_pct"] == pytest.approx(105.1, abs=0.1)

    def verdict(name, value, unit, peak=None, baseline=None):
        metric = Metric(check="burnin", family="burnin", metric=name, unit=unit, value=value, direction="higher",
                        params={"gpu": 0}, peak=peak)
        stored = {"value": baseline, "runs": [{"value": baseline, "at": "x", "snapshot_digest": "d"}], "ci": None}
        return judge(metric, shipped.rule_for("burnin", name, {"gpu": 0}), stored if baseline else None).verdict

    assert verdict("together_tflops", 379.4, "TFLOP/s", peak=989.5) == "new"
    assert verdict("together_gbps", 1482.1, "GB/s", peak=3350.0) == "new"
    assert verdict("sustained_tflops", 379.4, "TFLOP/s", peak=989.5) == "fail"  # alone, the floor holds
    assert verdict("together_work_pct", figures["together_work_pct"], "%") == "new"
    assert verdict("together_work_pct", 85.0, "%") == "warn"
    assert verdict("together_work_pct", 105.0, "%", baseline=105.1) == "pass"
    assert verdict("together_work_pct", 85.0, "%", baseline=105.1) == "fail"  # −19 %


def test_the_burnin_in_words():
    from gpucert.report.burnin_view import sentence

    metrics = {"sustained_tflops": {"value": 687.0, "peak": 989.0, "verdict": "pass"},
               "tflops_of_burst_pct": {"value": 83.0}, "sustained_gbps": {"value": 4100.0, "peak": 4800.0},
               "gbps_of_burst_pct": {"value": 97.0}, "thermal_slowdown_s": {"value": 0.0},
               "power_slowdown_s": {"value": 212.0}, "sm_clock_drop_pct": {"value": 9.0},
               "temp_peak_c": {"value": 71.0}, "xid_count": {"value": 0}, "row_remap_new": {"value": 0}}
    assert sentence(0, metrics) == ("GPU 0 passed: sustained 687.0 TFLOP/s (83 % of its burst, 69 % of the "
                                    "datasheet); 4,100 GB/s (97 % of its burst, 85 % of the datasheet); 0 s in "
                                    "thermal slowdown, 212 s in power slowdown; clocks 9 % below their highest; "
                                    "peak 71 °C; no XID, ECC error or remap.")
    metrics["xid_count"] = {"value": 2, "verdict": "fail"}
    assert sentence(1, metrics).startswith("GPU 1 FAILED (xid_count): ") and "2 xid count" in sentence(1, metrics)


def test_the_monitor_keeps_each_gpus_own_series_only_where_a_check_asks():
    """Per GPU, so a GPU that throttles is not averaged away by the node's mean (and the other
    checks' files stay as small as they were)."""
    from gpucert.monitor.summary import timeline

    t = np.arange(0.0, 2.0, 0.1)
    columns = {"t": t}
    for gpu, clock in ((0, 1980.0), (1, 1410.0)):
        columns.update({f"gpu{gpu}.util_gpu_pct": np.full(t.size, 99.0), f"gpu{gpu}.power_w": np.full(t.size, 690.0),
                        f"gpu{gpu}.mem_used_mib": np.full(t.size, 4096.0), f"gpu{gpu}.sm_clock_mhz": np.full(t.size, clock),
                        f"gpu{gpu}.temp_c": np.full(t.size, 60.0 + gpu)})
    columns["gpu1.temp_c"][5] = np.nan  # a reading NVML did not give
    plain = timeline(columns, 0.0)
    assert set(plain["series"]) == {"GPU util % (mean)", "GPU memory GiB (sum)", "power W (sum)"}
    per_gpu = timeline(columns, 0.0, per_gpu=True)["series"]
    assert per_gpu["GPU 0 SM clock MHz"] == [1980.0] * 20 and per_gpu["GPU 1 SM clock MHz"] == [1410.0] * 20
    assert per_gpu["GPU 1 power W"][0] == 690.0 and per_gpu["power W (sum)"][0] == 1380.0
    assert per_gpu["GPU 1 temperature °C"][5] is None and per_gpu["GPU 1 temperature °C"][6] == 61.0


def test_the_card_draws_the_burnin_per_gpu_over_its_minutes():
    from gpucert.report.burnin_view import time_series

    t = [0.0, 100.0, 200.0, 300.0]
    series = {f"GPU {g} {name}": [v] * 4 for g, (clock, watts, temp) in enumerate(((1980, 700, 70), (1410, 540, 83)))
              for name, v in (("SM clock MHz", clock), ("power W", watts), ("temperature °C", temp))}
    check = {"monitor": {"timeline": {"t_s": t, "series": {"power W (sum)": [1240] * 4, **series}},
                         "overlays": {f"GPU {g} gemm TFLOP/s": {"t_s": [10.0, 50.0], "values": [680.0, 560.0 + g]}
                                      for g in (0, 1)} | {"GPU 0 hbm GB/s": {"t_s": [150.0], "values": [3000.0]}}}}
    charts = time_series(check)
    titles = ["burn-in: TFLOP/s per GPU", "burn-in: SM clock per GPU", "burn-in: power per GPU",
              "burn-in: temperature per GPU"]
    assert len(charts) == 4 and all(title in chart for title, chart in zip(titles, charts))
    assert all("GPU 0" in chart and "GPU 1" in chart for chart in charts)
    assert "hbm" not in charts[0] and "(sum)" not in charts[2]  # TFLOP/s only; each GPU, not the node's sum
    assert time_series({"monitor": None}) == []  # without the monitor: none, and the card says so


@pytest.mark.slow("gloo ranks under sustained load")
def test_a_rehearsal_under_the_fake_nvml_draws_each_gpus_clock(tmp_path):
    """The whole path: the burn-in asks for per-GPU series, the monitor's sampler process reads
    them from NVML (the fake, its only seam: GPU 1 held at 1,410 MHz), the card draws them."""
    plan = tmp_path / "plan.json"
    fake_pynvml.write_plan(plan, {"sm_clock_mhz": {"1": [[0, 1e9, 1410]]}})
    env = {"GPUCERT_NVML_MODULE": fake_pynvml.NAME, "FAKE_NVML_PLAN": str(plan),
           "PYTHONPATH": os.pathsep.join([fake_pynvml.FOLDER, os.environ.get("PYTHONPATH", "")])}
    run, metrics = pytest_burnin(tmp_path, "-k", "test_burnin", env=env)
    assert metrics is not None, run.stdout[-3000:]
    (check,) = metrics["checks"]
    series = check["monitor"]["timeline"]["series"]
    assert set(series["GPU 1 SM clock MHz"]) == {1410.0} and set(series["GPU 0 SM clock MHz"]) == {1980.0}, series.keys()
    assert {"GPU 0 power W", "GPU 1 power W", "GPU 0 temperature °C", "GPU 1 temperature °C"} <= set(series)
    card = (tmp_path / "r" / "report.html").read_text()
    section = card[card.index('<section id="burnin">'):]
    section = section[:section.index("</section>")]
    for title in ("TFLOP/s per GPU", "SM clock per GPU", "power per GPU", "temperature per GPU"):
        assert f"burn-in: {title}" in section, title


def test_gemm_bench_times_sustained_figures_on_request(capsys):
    """`gpucert bench gemm --sustain-s`: every shape (and the search) over seconds of back-to-back
    work after a warm-up, the figure to set beside mamf-finder's, not a burst."""
    from gpucert import cli

    assert cli.main(["bench", "gemm", "--device", "cpu", "--dtype", "fp32", "--shapes", "search",
                     "--search-range", "64:128:64", "--sustain-s", "0.2", "--warmup-s", "0.05",
                     "--preheat-s", "0.1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["shape"] == "search" and row["status"] == "ok" and row["tflops"] > 0
    assert cli.main(["bench", "gemm", "--device", "cpu", "--sustain-s", "0"]) == 2
    assert capsys.readouterr().err.strip() == "gpucert: error: --sustain-s must be > 0, got 0"


def test_certifys_search_ranks_by_bursts_and_times_its_fastest_shapes_sustained(capsys):
    """Issue 17 point 4: make certify's gemm_max_achievable is a sustained figure within its budget —
    the grid ranked by bursts, the `sustain_top` fastest timed back to back; the best of those."""
    from gpucert import cli
    from gpucert.physics import gemm as engine

    found = engine.search_max("fp32", "cpu", [32, 128], [128], [32, 128], budget_s=30, sustain_s=0.1,
                              warmup_s=0.02, sustain_top=2)
    assert found.status == "ok" and len(found.tried) == 4 and len(found.sustained) == 2, found
    assert all(r.method is None for r in found.tried)  # the ranking: bursts
    ranked = sorted(found.tried, key=lambda r: r.tflops, reverse=True)
    assert [r.params["shape"] for r in found.sustained] == [r.params["shape"] for r in ranked[:2]]
    assert all(r.method == core.SUSTAINED for r in found.sustained)
    assert found.best.method == core.SUSTAINED and found.best.tflops == max(r.tflops for r in found.sustained)
    assert "the 2 fastest shapes timed sustained" in found.note
    # the shipped check asks for exactly this, and a sustained figure for its squares and projections
    assert engine.SQUARE_SUSTAIN["sustain_s"] >= 1 and engine.PROJECTION_SUSTAIN["sustain_s"] > 0
    assert engine.SEARCH_SUSTAIN_TOP >= 1 and engine.PREHEAT_S > 0
    assert cli.main(["bench", "gemm", "--device", "cpu", "--shapes", "search", "--sustain-top", "2"]) == 2
    assert capsys.readouterr().err.strip() == "gpucert: error: --sustain-top needs --sustain-s and must be >= 1, got 2"


def test_the_card_says_which_gemm_figure_is_sustained_and_which_a_burst():
    from gpucert.report import card

    data = {"checks": [
        {"check": "gemm_max_achievable", "check_id": "gemm_max_achievable[dtype=bf16]", "params": {"dtype": "bf16"},
         "metrics": [{"metric": "tflops", "check": "gemm_max_achievable", "value": 687.0, "unit": "TFLOP/s",
                      "peak": 989.5, "method": "sustained", "params": {"dtype": "bf16"}, "verdict": "pass"}]},
        {"check": "memory", "check_id": "memory[gpu=0,kind=device_copy]", "params": {"gpu": "0", "kind": "device_copy"},
         "metrics": [{"metric": "gbps", "check": "memory", "value": 4200.0, "unit": "GB/s", "peak": 4800.0,
                      "params": {"gpu": "0", "kind": "device_copy"}, "verdict": "pass"}]}]}
    rows = {r["check_id"]: r["timing"] for r in card.physics_view(data)}
    assert rows == {"gemm_max_achievable[dtype=bf16]": "sustained", "memory[gpu=0,kind=device_copy]": "burst"}


@pytest.mark.slow("gloo ranks under sustained load")
def test_the_memtest_check_passes_clean_memory_and_fails_a_planted_flip(tmp_path):
    run, metrics = pytest_burnin(tmp_path, "-k", "memtest")
    assert run.returncode == 0, run.stdout[-3000:]
    checks = {c["check_id"]: c for c in metrics["checks"]}
    assert set(checks) == {"memtest[memtest_device=0]", "memtest[memtest_device=1]"}, list(checks)
    clean = {m["metric"]: m for m in checks["memtest[memtest_device=0]"]["metrics"]}
    assert clean["memtest_errors"]["value"] == 0 and clean["memtest_gbps"]["value"] > 0
    # one bit of word 4,242 in chunk 0, flipped after the address pattern's write: found, located, failed
    flip = {"pattern": "address", "chunk": 0, "word": 4242, "bit": 13}
    (tmp_path / "planted").mkdir()
    run, metrics = pytest_burnin(tmp_path / "planted", "-k", "memtest", env={"GPUCERT_MEMTEST_FAULT": json.dumps(flip)})
    assert run.returncode == 1, run.stdout[-3000:]
    check = next(c for c in metrics["checks"] if c["check_id"] == "memtest[memtest_device=0]")
    errors = {m["metric"]: m for m in check["metrics"]}["memtest_errors"]
    assert errors["value"] == 1 and errors["verdict"] == "fail", errors
    (where,) = check["findings"]["memtest_error"]
    assert where["pattern"].startswith("address") and where["chunk"] == "0", where
    assert int(where["offset"]) == 4242 * 8 and where["flipped_bits"] == "[13]", where


def test_a_baseline_measured_another_way_is_not_compared_nor_merged(tmp_path):
    """A GEMM figure measured sustained against a baseline of bursts: not judged against it (a
    regression of 15 % would be the method, not the node), shown as having no baseline of its
    method; --update-baselines starts its runs afresh instead of taking the burst's median."""
    from gpucert.baselines import Provenance, merged_runs
    from gpucert.judge import judge
    from gpucert.metrics import Metric
    from gpucert.thresholds import Rule

    burst = {"value": 812.0, "runs": [{"value": 812.0, "at": "x", "snapshot_digest": "d"}], "ci": None}
    sustained = Metric(check="gemm_square", family="gemm", metric="tflops", unit="TFLOP/s", value=687.0,
                       direction="higher", method="sustained")
    verdict = judge(sustained, Rule(), burst)
    assert verdict.verdict == "new" and "measured sustained, its baseline as a burst" in verdict.reason, verdict
    assert judge(sustained, Rule(), burst, missing_baseline="fail").verdict == "fail"
    same = judge(sustained, Rule(), {**burst, "method": "sustained"})
    assert same.verdict == "fail" and "vs baseline 812" in same.reason, same  # −15 % against its own method
    runs = merged_runs(burst, sustained, Provenance(snapshot_digest="d", git_revision=None, when="y"))
    assert [r["value"] for r in runs] == [687.0]


def test_sustained_blocks_follow_the_speed():
    """A GPU that slows under minutes of load (or a shared CPU) still gives a sample about every
    100 ms: the next block's iterations halve or double with the last block's time."""
    from gpucert.physics.core import _rescaled

    assert _rescaled(1000, 1.0, 0.1) == 125  # 1 ms an iteration: 125 iterations ≈ 0.125 s
    assert _rescaled(10, 0.001, 0.1) == 640  # 0.1 ms an iteration: doubled until ≥ 0.05 s
    assert _rescaled(8, 0.1, 0.1) == 8 and _rescaled(1, 5.0, 0.1) == 1
    assert _rescaled(100, 0.5, 0.1, counted=400) == 100  # the block timed was of 400 iterations
