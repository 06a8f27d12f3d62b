"""The resource monitor: its own sampler process on the load generator's clock, the real host
path, a fake NVML module for the GPU fields only, a real HTTP server for vLLM's /metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from gpucert.monitor import store, summary
from gpucert.monitor.sampler import Monitor, MonitorConfig
from gpucert.monitor.sources import parse_vllm_metrics

from . import fake_pynvml
from .emulators import wait_gone


@pytest.fixture(autouse=True)
def _fake_nvml_importable(monkeypatch):
    """The code under test imports the fake NVML binding by name, here and in the sampler it spawns."""
    fake_pynvml.importable(monkeypatch)


def monitor(tmp_path, **config):
    return Monitor(MonitorConfig(str(tmp_path / "m.npz"), **({"nvml_module": "fake_pynvml", "interval_s": 0.05} | config)))


def test_samples_gpus_and_host_in_its_own_process_on_the_monotonic_clock(tmp_path):
    before = time.monotonic()
    with monitor(tmp_path) as mon:
        time.sleep(1.5)
        meta, columns = mon.window()
    after = time.monotonic()
    assert meta["clock"]["pid"] != os.getpid()  # never in the caller's process
    assert [g["name"] for g in meta["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2 and not meta["notes"]
    t = columns["t"]
    assert before < t[0] < t[-1] < after  # the same clock as time.monotonic() here
    assert 25 <= len(t) <= 32  # 1.5 s at 50 ms
    figures = summary.summarize(columns)
    g0, g1 = figures["gpus"][0], figures["gpus"][1]
    assert g0["power_mean_w"] == 300 and g1["power_mean_w"] == 200
    # the energy counter's difference: 300 W and 200 W over the window
    assert g0["energy_j"] == pytest.approx(300 * figures["duration_s"], rel=0.02)
    assert figures["energy_j"] == pytest.approx(500 * figures["duration_s"], rel=0.02)
    assert g0["mem_used_peak_gib"] == 10 and g1["mem_used_peak_gib"] == 20
    assert g0["nvlink_tx_gbps"] == pytest.approx(10.0, rel=0.03) and g1["nvlink_tx_gbps"] == 0
    # GPU 1 answers only the newer byte counters: read in bytes, stored in KiB like GPU 0's
    assert g1["nvlink_rx_gbps"] == pytest.approx(5.0, rel=0.03) and g0["nvlink_rx_gbps"] == 0
    assert g0["pcie_tx_gbps"] is None  # not given by this NVML: absent, not zero
    assert g0["slowdown_reasons"] == [] and g1["slowdown_reasons"] == ["sw_power_cap"]
    assert g1["hard_slowdown_samples"] == 0  # a power cap is not a hardware slowdown
    assert figures["host"]["mem_used_peak_gib"] > 0 and figures["host"]["cpu_busy_peak_pct"] is not None
    assert figures["jitter_ms"]["p50"] < 10


def test_without_nvml_it_says_so_once_and_samples_the_host(tmp_path):
    with monitor(tmp_path, nvml_module="gpucert_no_such_nvml", counter_interval_s=0.1) as mon:
        # the host's figures are rates since the last read: read on counter ticks (every other 50 ms
        # tick), four of them in ~0.4 s — or later on a box busy with other tests (CI: 3 in 0.6 s)
        deadline = time.monotonic() + 10.0
        while True:
            time.sleep(0.2)
            meta, columns = mon.window()
            if np.count_nonzero(np.isfinite(columns["host.mem_used_gib"])) >= 4 or time.monotonic() > deadline:
                break
    assert len(meta["notes"]) == 1 and meta["notes"][0].startswith("no NVML (ModuleNotFoundError")
    assert not any(name.startswith("gpu") for name in columns)
    assert np.count_nonzero(np.isfinite(columns["host.mem_used_gib"])) >= 4
    assert summary.summarize(columns)["gpus"] == {}


class MetricsServer:
    """A real HTTP server on 127.0.0.1 answering /metrics as vLLM 0.26 does (prometheus_client's
    exposition of vLLM's metric names), with values the test changes. With `mount`, also as vLLM's
    prometheus_client mount under /metrics/ answers (`name[]` picks families); `paths` logs what
    was asked and `bytes_sent` what it cost."""

    def __init__(self, mount: bool = False):
        from prometheus_client import CollectorRegistry, Counter, Gauge
        self.registry = CollectorRegistry()
        labels = ["engine", "model_name"]
        self.running = Gauge("vllm:num_requests_running", "running", labels, registry=self.registry).labels("0", "m")
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", labels, registry=self.registry).labels("0", "m")
        self.kv = Gauge("vllm:kv_cache_usage_perc", "kv", labels, registry=self.registry).labels("0", "m")
        self.preempted = Counter("vllm:num_preemptions", "preemptions", labels, registry=self.registry).labels("0", "m")
        from prometheus_client import Histogram
        # vLLM's buckets; the engine's inter-token latencies, of which the sampler reads the sum and count
        self.itl = Histogram("vllm:inter_token_latency_seconds", "itl", labels, registry=self.registry,
                             buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                                      7.5, 10.0, 20.0, 40.0, 80.0]).labels("0", "m")
        for i in range(40):  # the bulk of vLLM's exposition: histograms nobody here asked for
            Histogram(f"vllm:latency_{i}_seconds", "x", labels, registry=self.registry,
                      buckets=[0.001 * 2 ** k for k in range(20)]).labels("0", "m").observe(0.1)
        registry, server = self.registry, self
        self.paths: list[str] = []
        self.bytes_sent: list[int] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit
                from prometheus_client import generate_latest
                server.paths.append(self.path)
                url = urlsplit(self.path)
                names = parse_qs(url.query).get("name[]")
                if mount and url.path == "/metrics/":
                    body, status = generate_latest(registry.restricted_registry(names) if names else registry), 200
                else:
                    body, status = generate_latest(registry), 200 if url.path == "/metrics" else 404
                server.bytes_sent.append(len(body))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.mark.parametrize("mount", [True, False], ids=["filtered", "plain"])
def test_vllm_metrics_attached_mid_run_from_a_real_server(tmp_path, mount):
    """Where the server filters (vLLM's /metrics/ mount), the sampler asks for its four families
    only; where it does not (404 there), it asks /metrics plainly and reads the same figures."""
    server = MetricsServer(mount=mount)
    try:
        with monitor(tmp_path) as mon:
            time.sleep(0.3)
            server.running.set(7)
            server.kv.set(0.25)
            server.preempted.inc(2)
            server.itl.observe(0.004)
            mon.attach_vllm(server.url)
            time.sleep(0.6)
            server.running.set(12)
            server.waiting.set(3)
            server.kv.set(0.5)
            server.preempted.inc(3)
            for _ in range(3):
                server.itl.observe(0.006)
            time.sleep(0.6)
            meta, columns = mon.window()
            mon.detach_vllm()  # as the plugin does when the engine stops, before the session ends
    finally:
        server.close()
    running = columns["vllm.running"]
    assert np.isnan(running[0])  # before the attach: the column exists, with no values
    figures = summary.summarize(columns)
    assert figures["vllm"]["running_peak"] == 12 and figures["vllm"]["waiting_peak"] == 3
    assert figures["vllm"]["kv_cache_usage_peak_pct"] == 50.0  # vLLM's fraction, as %
    assert figures["vllm"]["preemptions"] == 3  # counted within the window
    # the histogram's sum and count as sampled: 1 token at 4 ms before, 3 at 6 ms more after
    read = ~np.isnan(columns["vllm.itl_count"])
    assert columns["vllm.itl_count"][read][0] == 1 and columns["vllm.itl_count"][read][-1] == 4
    assert columns["vllm.itl_sum_s"][read][-1] == pytest.approx(0.022)
    assert np.nanmax(columns["vllm.age_ms"]) < 1000
    assert mon.final["vllm_metrics_filtered"] is mount  # still known after the detach
    assert server.paths[0].startswith("/metrics/?name%5B%5D=vllm%3Anum_requests_running")
    if mount:
        assert all(path.startswith("/metrics/?") for path in server.paths)
        assert max(server.bytes_sent) < 3000  # the families asked for, not ~100 kB of histograms
    else:
        assert len(server.paths) > 3 and all(path == "/metrics" for path in server.paths[1:])


def test_parse_vllm_metrics_sums_engines_and_skips_created_samples():
    text = "\n".join([
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="m"} 2.0',
        "# TYPE vllm:num_preemptions_total counter",
        'vllm:num_preemptions_total{engine="0",model_name="m"} 4.0',
        "# TYPE vllm:num_preemptions_created gauge",
        'vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9',
        "# TYPE vllm:gpu_cache_usage_perc gauge",  # the name before vLLM 0.10
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.125',
        # a histogram's sum and count, over engines; the deprecated name only where the new one is absent
        "# TYPE vllm:inter_token_latency_seconds histogram",
        'vllm:inter_token_latency_seconds_bucket{engine="0",le="0.01",model_name="m"} 9.0',
        'vllm:inter_token_latency_seconds_count{engine="0",model_name="m"} 10.0',
        'vllm:inter_token_latency_seconds_sum{engine="0",model_name="m"} 0.5',
        'vllm:inter_token_latency_seconds_count{engine="1",model_name="m"} 30.0',
        'vllm:inter_token_latency_seconds_sum{engine="1",model_name="m"} 0.25',
        "# TYPE vllm:time_per_output_token_seconds histogram",
        'vllm:time_per_output_token_seconds_count{model_name="m"} 999.0',
        'vllm:time_per_output_token_seconds_sum{model_name="m"} 99.0', ""])
    assert parse_vllm_metrics(text) == {"running": 5.0, "preemptions": 4.0, "kv_cache_usage_pct": 12.5,
                                        "itl_sum_s": 0.75, "itl_count": 40.0}
    # an older vLLM's name alone, its lines without a TYPE line
    old = 'vllm:time_per_output_token_seconds_count{model_name="m"} 8.0\nvllm:time_per_output_token_seconds_sum{model_name="m"} 0.08\n'
    assert parse_vllm_metrics(old) == {"itl_sum_s": 0.08, "itl_count": 8.0}


def test_the_emulator_serves_vllm_metric_names(tmp_path):
    """`gpucert emulator` answers /metrics with vLLM's names: its in-flight streams as running."""
    import asyncio
    from gpucert.serving.datasets import Prompt
    from gpucert.serving.emulator import EmulatorConfig, EmulatorServer
    from gpucert.serving.loadgen import LoadConfig, LoadGenerator
    import aiohttp

    async def go():
        async with EmulatorServer(EmulatorConfig(ttft_ms=300, itl_ms=1)) as server:
            config = LoadConfig(base_url=server.base_url, model="m", concurrency=6, num_requests=6)
            load = asyncio.create_task(LoadGenerator(config, [Prompt("hi", None, 4)]).run())
            await asyncio.sleep(0.15)
            async with aiohttp.ClientSession() as session:
                async with session.get(server.base_url.removesuffix("/v1") + "/metrics") as response:
                    during = parse_vllm_metrics(await response.text())
            await load
            return during
    # no token after a first one yet (300 ms to it): the inter-token latency histogram is empty
    assert asyncio.run(go()) == {"running": 6.0, "waiting": 0.0, "preemptions": 0.0, "itl_sum_s": 0.0,
                                 "itl_count": 0.0}


def test_store_chunks_join_and_a_flushed_file_is_whole(tmp_path):
    path = tmp_path / "s.npz"
    out = store.ColumnStore(path, {"interval_s": 0.1})
    out.append({"t": [1.0, 2.0], "scheduled": [1.0, 2.0], "a": [1.5, 2.5]})
    # after each append the zip is complete: readable while the sampler keeps running
    assert zipfile.ZipFile(path).testzip() is None
    out.append({"t": [3.0], "scheduled": [3.0], "b": [9.0]})  # a source that came later
    meta, columns = store.load(path)
    assert meta == {"interval_s": 0.1}
    assert columns["t"].tolist() == [1.0, 2.0, 3.0] and columns["t"].dtype == np.float64
    assert columns["a"].dtype == np.float32 and np.isnan(columns["a"][2]) and np.isnan(columns["b"][:2]).all()
    import io
    with zipfile.ZipFile(path) as zf:  # plain zipfile + numpy read a chunk too
        chunk = np.load(io.BytesIO(zf.read("c00000.npz")))
        assert chunk["names32"].tolist() == ["a"] and chunk["values32"][:, 0].tolist() == [1.5, 2.5]


def test_monitor_command_json_and_bad_input(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(fake_pynvml.__file__),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "mon.npz"
    done = subprocess.run([sys.executable, "-m", "gpucert.cli", "monitor", "--duration", "0.6", "--interval-ms", "50",
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"samples", "interval_ms", "jitter_ms", "sources"} <= set(result)
    assert set(result["jitter_ms"]) >= {"p50", "p99"} and result["interval_ms"] == 50
    assert 8 <= result["samples"] <= 14 and out.exists()
    assert result["sources"]["host"]["mem_used_peak_gib"] > 0
    for args, message in ((["--duration", "0"], "--duration must be > 0"),
                          (["--duration", "1", "--interval-ms", "5"], "monitor interval must be >= 20 ms")):
        bad = subprocess.run([sys.executable, "-m", "gpucert.cli", "monitor", *args], capture_output=True, text=True,
                             timeout=30)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr


def test_check_metrics_from_a_window():
    t = np.arange(0, 10.0, 0.1)
    columns = {"t": t, "scheduled": t - 0.001,
               "gpu0.util_gpu_pct": np.full(len(t), 80.0), "gpu1.util_gpu_pct": np.full(len(t), 60.0),
               "gpu0.power_w": np.full(len(t), 400.0), "gpu1.power_w": np.full(len(t), 300.0),
               "gpu0.energy_j": 400.0 * t, "gpu1.energy_j": 300.0 * t,
               "gpu0.clock_events": np.where(t > 5, 0x40, 0x0).astype(float), "gpu1.clock_events": np.zeros(len(t))}
    figures = summary.summarize(columns, output_tokens=1000)
    rows = {metric: (value, unit, note) for metric, value, unit, _, note in summary.check_metrics(figures)}
    assert rows["gpu_util_mean_pct"][0] == 70 and rows["gpu_power_mean_w"][0] == 700
    assert rows["energy_j"][0] == pytest.approx(700 * 9.9)
    assert rows["energy_j_per_output_token"][0] == pytest.approx(700 * 9.9 / 1000)
    assert rows["gpu_hard_slowdown_samples"][0] == 49 and "hw_thermal_slowdown" in rows["gpu_hard_slowdown_samples"][2]
    assert rows["monitor_jitter_ms_p99"][0] == pytest.approx(1.0)
    # a check measured 10 s but the samples inside span 9.9 s (and fewer when the sampler was
    # late): the energy covers the whole window at the mean power the counter gave
    assert summary.summarize(columns, window_s=10.0)["energy_j"] == pytest.approx(700 * 10.0)
    gappy = {name: values[::7] for name, values in columns.items()}  # a sampler stalled for 0.6 s at a time
    assert summary.summarize(gappy, window_s=10.0)["energy_j"] == pytest.approx(700 * 10.0)


def test_repeats_energy_is_one_repeat_and_the_pauses_between_them_are_left_out():
    """Three repeats of one workload at 700 W with 5 s idle (140 W) between them: energy_j is one
    repeat's (the median, each a sample), not three; joules per token leave the pauses out (on
    the node, session 6: energy_j read 3x the one-repeat baselines and J/token +20 %)."""
    t = np.arange(0, 25.0, 0.1)
    busy = ((t >= 0) & (t <= 5)) | ((t >= 10) & (t <= 15)) | ((t >= 20) & (t <= 25))
    watts = np.where(busy, 700.0, 140.0)
    energy = np.concatenate([[0.0], np.cumsum(watts[1:] * 0.1)])  # the counter the power gives
    columns = {"t": t, "scheduled": t, "gpu0.power_w": watts, "gpu0.energy_j": energy,
               "gpu0.util_gpu_pct": np.where(busy, 90.0, 0.0)}
    windows = [(0.0, 5.0), (10.0, 15.0), (20.0, 24.9)]
    figures = summary.summarize_windows(columns, windows, output_tokens=[1000, 1000, 1000])
    assert figures["energy_j"] == pytest.approx(700 * 5.0, rel=0.02)
    assert figures["energy_j_per_output_token_repeats"] == pytest.approx([e / 1000 for e in figures["energy_j_repeats"]])
    assert len(figures["energy_j_repeats"]) == 3
    assert figures["energy_j_per_output_token"] == pytest.approx(sum(figures["energy_j_repeats"]) / 3000)
    assert figures["energy_j_per_output_token"] == pytest.approx(700 * 14.9 / 3000, rel=0.02)
    assert figures["gpus"][0]["util_gpu_mean_pct"] == pytest.approx(90.0)  # no idle sample counted
    # the span of all three as one window would count 10 s of idle and 3x the energy
    whole = summary.summarize_windows(columns, [(0.0, 24.9)], output_tokens=3000)
    assert whole["energy_j"] > 2.9 * figures["energy_j"] and whole["energy_j_per_output_token"] > 1.1 * \
        figures["energy_j_per_output_token"]


def test_different_loads_of_one_check_add_their_energy_and_leave_the_engine_starts_out():
    """A study check: an engine start (idle GPU, 10 s) before each of two different loads (5 s at
    700 W, then 3 s at 500 W). The figures are of the loads alone and the energy is both loads',
    not a median of them (they are not repeats of one workload), per token over all tokens."""
    t = np.arange(0, 23.0, 0.1)
    first, second = (t >= 10) & (t <= 15), (t >= 20) & (t <= 23)
    watts = np.where(first, 700.0, np.where(second, 500.0, 100.0))
    energy = np.concatenate([[0.0], np.cumsum(watts[1:] * 0.1)])
    columns = {"t": t, "scheduled": t, "gpu0.power_w": watts, "gpu0.energy_j": energy,
               "gpu0.util_gpu_pct": np.where(first | second, 80.0, 0.0)}
    windows = [(10.0, 15.0), (20.0, 22.9)]
    figures = summary.summarize_windows(columns, windows, output_tokens=[1000, 500], repeats=False)
    assert figures["energy_j"] == pytest.approx(700 * 5.0 + 500 * 2.9, rel=0.03)
    assert figures["energy_j_per_output_token"] == pytest.approx(figures["energy_j"] / 1500)
    assert "energy_j_repeats" not in figures and "energy_j_per_output_token_repeats" not in figures
    assert figures["gpus"][0]["util_gpu_mean_pct"] == pytest.approx(80.0)  # no engine-start sample
    as_repeats = summary.summarize_windows(columns, windows, output_tokens=[1000, 500])
    assert as_repeats["energy_j"] < 0.8 * figures["energy_j"]  # the median of two, which these are not


@pytest.mark.slow("the sampler timed over seconds")
def test_counters_are_read_at_their_own_cadence_within_a_cpu_budget(tmp_path, monkeypatch):
    """Energy, PCIe/NVLink bytes, ECC and host CPU are read on counter ticks only (on H100 the
    energy read alone is ~3 ms of CPU a GPU, 500x a gauge), NaN between; where a read costs more
    than 0.5 % of a core over the counter interval, the interval stretches to keep it at 0.5 %."""
    with monitor(tmp_path, counter_interval_s=0.2) as mon:
        time.sleep(1.6)
        meta, columns = mon.window()
    final = mon.final
    assert meta["counter_interval_s"] == 0.2 and meta["counter_cpu_budget"] == 0.005
    read = np.flatnonzero(np.isfinite(columns["gpu0.energy_j"]))
    spacing = np.diff(columns["t"][read])
    # every 4th 50 ms tick, never sooner. A read that cost more than 1 ms of CPU (0.5 % of 0.2 s)
    # pushes the next one later, by what the sampler measured and reports (counter_spacing_s: the
    # shortest and longest spacing it chose after the first read) — and it takes no longer one. On
    # this 2-core VM the host's two /proc reads alone cost 0.4-0.9 ms (session 36), so how many
    # reads are stretched is the box's, not the sampler's: the first spacing is the cadence itself
    shortest, longest = final["counter_spacing_s"]
    assert len(read) >= 3 and abs(spacing[0] - 0.2) < 0.03 and spacing.min() > 0.17, spacing
    assert shortest >= 0.2 - 1e-9 and spacing.max() <= longest + 0.1, (spacing, final["counter_spacing_s"])
    if longest < 0.21:  # no read over the budget: the cadence throughout
        assert len(read) >= 6 and abs(np.median(spacing) - 0.2) < 0.03, spacing
    assert np.isfinite(columns["gpu0.power_w"]).all()  # gauges every tick
    # host CPU: a rate since the last read, on the same ticks (none at the first)
    assert np.array_equal(read[1:], np.flatnonzero(np.isfinite(columns["host.cpu_busy_pct"])))
    assert final["counter_reads"] >= len(read)

    monkeypatch.setenv("FAKE_NVML_ENERGY_CPU_MS", "4")  # a slow driver: 8 ms of CPU a read, 2 GPUs
    with monitor(tmp_path, counter_interval_s=0.2) as mon:
        time.sleep(3.4)  # the sampler's start, 0.2 s, then two reads ~1.6-1.8 s apart (the host's own ~0.5 ms)
        _, columns = mon.window()
    read = np.flatnonzero(np.isfinite(columns["gpu0.energy_j"]))
    # the first read at the configured interval, then ~8 ms / 0.5 % = ~1.6 s apart
    assert 3 <= len(read) <= 4 and np.diff(columns["t"][read])[1:].min() > 1.2, columns["t"][read]
    assert mon.final["counter_spacing_s"][0] > 1.2


def test_nvml_counters_and_the_cheapest_nvlink_form():
    """Gauges and counters are separate reads; the first counter read asks every NVLink form the
    driver might have and keeps the cheapest one each GPU answers."""
    from gpucert.monitor.sources import NvmlSource
    source = NvmlSource("fake_pynvml")
    assert source.open()
    row = {}
    source.read(row)
    assert row["gpu0.power_w"] == 300 and "gpu0.energy_j" not in row
    for _ in range(2):
        source.read_counters(row)
    assert np.isfinite(row["gpu0.energy_j"]) and np.isfinite(row["gpu0.nvlink_tx_kib"])
    # GPU 0: the driver's own sum over its links (one value a direction); GPU 1: bytes link by link
    assert source._nvlink_form == {0: "kib_total", 1: "bytes_links"}


def test_counters_are_rated_over_their_own_span():
    """Rates and energies come from the time between a counter's own first and last reads in the
    window, not the window's; a window with one read falls back to the power samples."""
    t = np.arange(0, 10.0, 0.1)
    counter_ticks = np.isin(np.arange(len(t)), [10, 90])  # read at 1 s and 9 s, ticks over 0…9.9 s
    counters = lambda per_s: np.where(counter_ticks, 5e6 + per_s * t, np.nan)
    columns = {"t": t, "scheduled": t, "gpu0.power_w": np.full(len(t), 400.0), "gpu0.energy_j": counters(400.0),
               "gpu0.nvlink_tx_kib": counters(8e9 / 1024), "gpu0.pcie_rx_bytes": counters(2e9)}
    figures = summary.summarize(columns, window_s=10.0)
    g0 = figures["gpus"][0]
    assert g0["nvlink_tx_gbps"] == pytest.approx(8.0) and g0["pcie_rx_gbps"] == pytest.approx(2.0)
    assert g0["energy_j"] == pytest.approx(4000.0)  # 400 W over the 10 s window
    assert summary.summarize(columns)["energy_j"] == pytest.approx(400 * 9.9)  # over the sampled span
    short = {name: values[5:15] for name, values in columns.items()}  # one read in it
    assert summary.summarize(short, window_s=1.0)["energy_j"] == pytest.approx(400.0)
    assert summary.summarize(short)["gpus"][0]["nvlink_tx_gbps"] is None  # no rate from one read


def test_counter_interval_is_checked(tmp_path):
    with pytest.raises(ValueError, match="counter interval must be >="):
        MonitorConfig(str(tmp_path / "m.npz"), interval_s=0.1, counter_interval_s=0.05)


def test_counters_keep_their_precision_on_disk(tmp_path):
    """An energy counter after a month at 700 W is ~1.8e9 J: float32 would move it by ~128 J, a
    2 % error on a 10 s window. Counters and timestamps are stored as float64."""
    path = tmp_path / "c.npz"
    big = 1.8e9
    store.ColumnStore(path, {}).append({"t": [0.0, 10.0], "scheduled": [0.0, 10.0],
                                        "gpu0.energy_j": [big, big + 7000.25], "gpu0.power_w": [700.1, 700.1]})
    _, columns = store.load(path)
    assert columns["gpu0.energy_j"][1] - columns["gpu0.energy_j"][0] == 7000.25
    assert columns["gpu0.power_w"].dtype == np.float32


def test_a_dead_parent_leaves_no_sampler_behind_and_its_samples_on_disk(tmp_path):
    """The caller killed (SIGKILL: no goodbye): the sampler sees its pipe close, flushes, exits."""
    path = tmp_path / "orphan.npz"
    script = (f"import os, sys, time\nsys.path.insert(0, {os.path.dirname(fake_pynvml.__file__)!r})\n"
              "from gpucert.monitor.sampler import Monitor, MonitorConfig\n"
              "if __name__ == '__main__':\n"
              f"    m = Monitor(MonitorConfig({str(path)!r}, interval_s=0.05, nvml_module='fake_pynvml')).start()\n"
              "    print(m.meta['clock']['pid'], flush=True)\n"
              "    time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    sampler = int(proc.stdout.readline())
    time.sleep(0.6)
    proc.kill()
    proc.wait()
    assert wait_gone(sampler), "the sampler outlived its parent"
    _, columns = store.load(path)
    assert len(columns["t"]) >= 8  # the ~0.6 s it sampled, flushed on the way out


def test_ctrl_c_stops_the_monitor_command_with_what_it_sampled(tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C): the sampler ignores it, the
    command stops it, and the JSON still reports what was sampled."""
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "gpucert.cli", "monitor", "--duration", "30", "--interval-ms", "50",
                             "--out", str(tmp_path / "c.npz"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # Ctrl-C while sampling, not while the sampler is still starting: on a busy box its start
    # (a spawned interpreter importing numpy) can take longer than the 2 s sleep alone. The
    # sampler creates the file just before it reports ready.
    deadline = time.monotonic() + 60
    while not (tmp_path / "c.npz").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    result = json.loads(out)
    assert result["samples"] >= 5 and result["duration_s"] < 10


@pytest.mark.fault("time", "Ctrl-C to `gpucert monitor` while its sampler is still starting (a driver init "
                   "that takes 30 s; a real SIGINT to the process group)",
                   "one line 'gpucert: interrupted', exit 130, no traceback; the half-started sampler is gone")
def test_ctrl_c_while_the_sampler_starts_is_one_line(tmp_path):
    import signal
    marker = tmp_path / "init.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(fake_pynvml.__file__),
                                                        os.environ.get("PYTHONPATH", "")]),
           "GPUCERT_NVML_MODULE": "fake_pynvml", "FAKE_NVML_INIT_S": "30", "FAKE_NVML_INIT_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "gpucert.cli", "monitor", "--duration", "30", "--interval-ms", "50",
                             "--out", str(tmp_path / "m.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    sampler = int(marker.read_text())
    assert sampler != proc.pid  # the sampler's own process is inside the driver's init
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err, out) == (130, "gpucert: interrupted\n", "")
    assert wait_gone(sampler), "the half-started sampler outlived the command"


def test_a_server_without_metrics_is_asked_once(tmp_path):
    """An OpenAI-compatible server that is not vLLM answers /metrics 404: the monitor notes it and
    stops polling (10 requests a second at a server under test would be load of our own) — after
    one try of the filtered form and one plain."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        mon = monitor(tmp_path, vllm_metrics_url=url).start()
        time.sleep(0.8)
        final = mon.stop()
    finally:
        server.shutdown()
    assert [hit.split("?")[0] for hit in hits] == ["/metrics/", "/metrics"]
    assert any("no /metrics here (HTTP 404)" in note for note in final["notes"])


def test_parse_picks_its_families_out_of_a_large_exposition():
    """vLLM's /metrics is ~1,000 lines of histograms; only the four families are parsed (a prefix
    filter first), and a family whose name merely starts like one of them is not taken for it."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    registry, labels = CollectorRegistry(), ["engine", "model_name"]
    Gauge("vllm:num_requests_running", "x", labels, registry=registry).labels("0", "m").set(3)
    Gauge("vllm:num_requests_running_extra", "decoy", labels, registry=registry).labels("0", "m").set(99)
    Counter("vllm:num_preemptions", "x", labels, registry=registry).labels("0", "m").inc(2)
    for i in range(40):
        Histogram(f"vllm:latency_{i}_seconds", "x", labels, registry=registry,
                  buckets=[0.001 * 2 ** k for k in range(20)]).labels("0", "m").observe(0.1)
    text = generate_latest(registry).decode()
    assert len(text.splitlines()) > 1000
    assert parse_vllm_metrics(text) == {"running": 3.0, "preemptions": 2.0}


@pytest.mark.slow("the sampler timed over seconds")
def test_the_sampler_reports_its_own_steady_cpu(tmp_path, monkeypatch):
    """The ≤ 2 % figure is the sampler process's CPU time after its first second over the wall time:
    a gauge read that burns 5 ms of CPU on each of 2 GPUs every 50 ms tick is 20 % of a core — on a
    quiet box. On a busy one the sampler gets the CPU later, misses ticks and burns only in the
    ticks it samples (seen: 10.8 % under a CPU hog on both cores), so the 10 ms per tick is counted
    over the ticks it really sampled in its steady window (after its first second)."""
    with monitor(tmp_path) as mon:
        time.sleep(2.2)
    baseline = mon.final["cpu_steady_pct"]
    assert 0 < baseline < 10
    monkeypatch.setenv("FAKE_NVML_GAUGE_CPU_MS", "5")
    with monitor(tmp_path) as mon:
        time.sleep(2.2)
    _, columns = mon.window()
    t = columns["t"]
    steady = t[t >= columns["scheduled"][0] + 1.0]  # the sampler's steady window starts at this tick
    burned = 100 * len(steady) * 2 * 5e-3 / (steady[-1] - steady[0] + 0.05)  # to the stop, within a tick
    assert burned == pytest.approx(20, abs=5) or mon.final["missed"] > 0  # the quiet box's figure
    assert mon.final["cpu_steady_pct"] == pytest.approx(baseline + burned, abs=5), (burned, mon.final)


def test_an_older_nvml_binding_is_read_with_what_it_has(tmp_path, monkeypatch):
    """nvidia-ml-py before 12.535 names the clock-event call ...ThrottleReasons, and an old binding
    may lack a function altogether: the source reads what exists, leaves the rest NaN, never dies."""
    from gpucert.monitor.sources import NvmlSource
    (tmp_path / "old_pynvml.py").write_text(
        "from fake_pynvml import *\n"
        "import fake_pynvml\n"
        "del nvmlDeviceGetCurrentClocksEventReasons, nvmlDeviceGetTotalEnergyConsumption\n"
        "def nvmlDeviceGetCurrentClocksThrottleReasons(handle):\n"
        "    return fake_pynvml.CLOCK_EVENTS[handle]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = NvmlSource("old_pynvml")
    assert source.open()
    row = {}
    for _ in range(2):  # a second tick: the missing call is not retried, nothing raises
        source.read(row)
        source.read_counters(row)
    assert row["gpu1.clock_events"] == 0x4 and row["gpu0.power_w"] == 300
    assert np.isnan(row["gpu0.energy_j"])


def test_a_reader_follows_a_growing_file(tmp_path):
    path = tmp_path / "g.npz"
    out = store.ColumnStore(path, {"interval_s": 0.1})
    reader = store.Reader(path)
    out.append({"t": [1.0, 2.0], "scheduled": [1.0, 2.0]})
    assert reader.read()[1]["t"].tolist() == [1.0, 2.0]
    out.append({"t": [3.0], "scheduled": [3.0], "b": [9.0]})
    meta, columns = reader.read()
    assert meta == {"interval_s": 0.1} and columns["t"].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(columns["b"][:2]).all() and columns["b"][2] == 9.0


# ---- `gpucert monitor` without --out: its temporary folder goes, however the command ends ------

def _monitor_cmd(tmp_path, *args, **env):
    """`gpucert monitor ARGS` with TMPDIR inside tmp_path (where its temporary folder must appear
    and go) and the fake driver at the NVML seam; a Popen in its own session, for Ctrl-C."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    fake_folder = os.path.dirname(os.path.abspath(fake_pynvml.__file__))
    full_env = {**os.environ, "TMPDIR": str(tmp), "GPUCERT_NVML_MODULE": "fake_pynvml",
                "PYTHONPATH": os.pathsep.join([fake_folder, os.environ.get("PYTHONPATH", "")]),
                **env}
    proc = subprocess.Popen([sys.executable, "-m", "gpucert.cli", "monitor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=full_env)
    return proc, tmp


def _left_behind(tmp):
    return sorted(p.name for p in tmp.glob("gpucert-monitor-*"))


def _wait_for(predicate, proc, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert predicate(), "the monitor never got there"


def test_monitor_without_out_removes_its_temporary_folder(tmp_path):
    proc, tmp = _monitor_cmd(tmp_path, "--duration", "0.5", "--interval-ms", "50", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["samples"] >= 5 and result["out"] is None  # nothing kept to point at
    assert _left_behind(tmp) == []
    proc, tmp = _monitor_cmd(tmp_path, "--duration", "0.3", "--interval-ms", "50")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "samples not kept (--out FILE.npz keeps them)" in out, out + err
    assert _left_behind(tmp) == []


@pytest.mark.fault("monitor", "`gpucert monitor` without --out given a bad --interval-ms (5 ms)",
                   "one line, exit 2; no gpucert-monitor-* folder left in TMPDIR")
def test_monitor_bad_input_leaves_no_temporary_folder(tmp_path):
    proc, tmp = _monitor_cmd(tmp_path, "--duration", "1", "--interval-ms", "5")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (2, "") and err.count("\n") == 1 and "monitor interval must be >= 20 ms" in err
    assert _left_behind(tmp) == []


@pytest.mark.fault("monitor", "Ctrl-C to `gpucert monitor` without --out while it samples (SIGINT to the "
                   "process group)", "the summary of what it sampled, exit 0; its temporary folder removed")
def test_ctrl_c_while_sampling_removes_the_temporary_folder(tmp_path):
    import signal
    proc, tmp = _monitor_cmd(tmp_path, "--duration", "30", "--interval-ms", "50", "--json")
    _wait_for(lambda: any(tmp.glob("gpucert-monitor-*/monitor.npz")), proc)  # written just before ready
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert json.loads(out)["samples"] >= 5
    assert _left_behind(tmp) == []


@pytest.mark.fault("monitor", "Ctrl-C to `gpucert monitor` without --out while its sampler is still starting "
                   "(a driver init that takes 30 s)",
                   "'gpucert: interrupted', exit 130; the sampler gone and its temporary folder removed")
def test_ctrl_c_while_starting_removes_the_temporary_folder(tmp_path):
    import signal
    marker = tmp_path / "init.pid"
    proc, tmp = _monitor_cmd(tmp_path, "--duration", "30", "--interval-ms", "50",
                             FAKE_NVML_INIT_S="30", FAKE_NVML_INIT_MARKER=str(marker))
    _wait_for(lambda: marker.exists() and marker.read_text(), proc)
    assert _left_behind(tmp) != []  # the folder exists while the sampler starts
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err, out) == (130, "gpucert: interrupted\n", "")
    assert wait_gone(int(marker.read_text()))
    assert _left_behind(tmp) == []
