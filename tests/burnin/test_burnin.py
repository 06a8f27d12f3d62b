"""Burn-in (`make burnin`, marker `burnin`): every GPU under minutes of sustained GEMM and HBM
streaming, alone and together (with two or more GPUs an all-reduce at the same time), while the
monitor samples clocks, power, temperature, clock-event reasons, ECC and XID events throughout
(gpucert.physics.burnin; docs/METRICS.md, Burn-in). Per GPU: the sustained TFLOP/s and GB/s as a
fraction of the burst figure and of the datasheet, time in thermal and power slowdown, the clock
drop, the peak temperature; any new ECC error, row remap or XID fails; on a node of several GPUs,
the one furthest from the others is named."""

from __future__ import annotations

import pytest

from gpucert import gpus
from gpucert.physics import burnin, datasheet

pytestmark = pytest.mark.burnin

# the monitor's per-GPU figures judged here (thresholds.yaml, "burnin"): name → unit
MONITOR_FIGURES = {"thermal_slowdown_s": "s", "power_slowdown_s": "s", "sm_clock_drop_pct": "%",
                   "temp_peak_c": "°C", "xid_count": "events", "ecc_uncorrected_new": "errors",
                   "ecc_corrected_new": "errors"}


def _repairs():
    """Every GPU's row-remap and retired-page counters now (NVML, as the monitor reads them), or
    None where NVML is not there (a CPU rehearsal)."""
    import importlib

    from gpucert.monitor.attach import nvml_module
    from gpucert.monitor.events import read_repairs
    try:
        nv = importlib.import_module(nvml_module())
        nv.nvmlInit()
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        return read_repairs(nv, handles)
    except Exception:  # noqa: BLE001 — no NVML here: the repairs are unknown, not zero
        return None


def _record_repairs(gpucert, before, after, ranks: int) -> None:
    """Rows remapped and pages retired during the burn-in, per GPU: any fails."""
    from gpucert.monitor.summary import repair_figures

    if before is None or after is None:
        gpucert.finding("burnin", notice="row remaps and retired pages not read (no NVML here)")
        return
    for note in sorted(set(before[1]) | set(after[1])):
        gpucert.finding("burnin", notice=note)
    for rank in range(ranks):
        grown = repair_figures(rank, {"repairs_start": before[0]}, after[0])
        remap, pages = grown["row_remap_new"], grown["retired_pages_new"]
        if remap is not None:
            rows = (remap["corrected"] or 0) + (remap["uncorrected"] or 0)
            gpucert.record("row_remap_new", rows + int(remap["failure"] or remap["pending"]), unit="rows",
                           direction="lower", params={"gpu": rank},
                           note=f"{remap['corrected']} corrected, {remap['uncorrected']} uncorrected; pending "
                                f"{remap['pending']}, failure {remap['failure']} (a pending or failed remap counts one)")
        if pages is not None:
            gpucert.record("retired_pages_new", sum(v or 0 for v in pages.values()), unit="pages",
                           direction="lower", params={"gpu": rank},
                           note=f"{pages['single_bit']} single-bit, {pages['double_bit']} double-bit")


def _devices(config: pytest.Config) -> list[str]:
    given = config.getoption("--burnin-devices")
    if given:
        return [d.strip() for d in given.split(",") if d.strip()]
    count, reason = gpus.visible()
    if count == 0:
        pytest.skip(f"{reason} (--burnin-devices cpu,cpu rehearses the burn-in on the CPU, certifying nothing)")
    return [f"cuda:{i}" for i in range(count)]


def test_burnin(gpucert, request, gpucert_report_dir, gpucert_monitor):
    devices = _devices(request.config)
    minutes = request.config.getoption("--burnin-min")
    config = burnin.BurninConfig.for_devices(devices, minutes * 60, gpucert_report_dir / "burnin",
                                             dtype=request.config.getoption("--burnin-dtype"))
    config.fault = burnin.BurninConfig.fault_from_env()  # the self-tests' planted faults only
    gpucert.finding("burnin", devices=", ".join(devices), minutes=f"{minutes:g}", dtype=config.dtype,
                    gemm=f"{config.gemm_size}³", copy_gib=f"{config.copy_bytes / 2**30:g}")
    if not any(d.startswith("cuda") for d in devices):
        gpucert.finding("burnin", notice="a rehearsal on the CPU (--burnin-devices): it certifies no GPU")
    before = _repairs() if any(d.startswith("cuda") for d in devices) else None
    result = burnin.run(config)
    after = _repairs() if before is not None else None
    _record_repairs(gpucert, before, after, len(devices))
    gpucert.work(window=(result.started_monotonic, result.ended_monotonic), per_gpu=True)
    figures = gpucert_monitor.figures(result.started_monotonic, result.ended_monotonic) if gpucert_monitor else None
    tflops = {}
    for rank, device in enumerate(devices):
        where = {"gpu": rank}
        if rank in result.failures:
            gpucert.record_error("sustained_tflops", result.failures[rank], unit="TFLOP/s", params=where)
        out = result.ranks.get(rank)
        if out is None:
            continue
        figures_of = burnin.sustained(out)
        tflops[rank] = figures_of["sustained_tflops"]
        _record_rank(gpucert, request, config, rank, device, out, figures_of)
        gpu = ((figures or {}).get("gpus") or {}).get(rank) or ((figures or {}).get("gpus") or {}).get(str(rank))
        for name, unit in MONITOR_FIGURES.items():
            if gpu and gpu.get(name) is not None:
                gpucert.record(name, gpu[name], unit=unit, direction="lower", params=where,
                               note="the monitor over the burn-in")
    for rank, gap in burnin.outliers(tflops).items():
        gpucert.record("vs_median_tflops_pct", gap, unit="%", direction="higher", params={"gpu": rank},
                       note="sustained GEMM TFLOP/s against the median of the node's GPUs")
    worst = min(burnin.outliers(tflops).items(), key=lambda kv: kv[1], default=None)
    if worst is not None:
        gpucert.finding("burnin", notice=f"slowest GPU: {worst[0]} ({worst[1]:+.1f} % against the node's median)")
    if result.failures:
        pytest.fail("; ".join(result.failures.values()), pytrace=False)


def _record_rank(gpucert, request, config, rank: int, device: str, out: dict, figures_of: dict) -> None:
    where = {"gpu": rank}
    spec = None
    if device.startswith("cuda"):
        _, spec = datasheet.gpu_of(gpucert.snapshot, rank)
    peak_tflops = spec.dense_tflops.get(config.dtype) if spec else None
    peak_gbps = spec.memory_gbps if spec else None
    phases = out["phases"]
    for name, unit, peak, note in (
            ("sustained_tflops", "TFLOP/s", peak_tflops, f"GEMM {config.gemm_size}³ {config.dtype}, median 100 ms block"),
            ("sustained_gbps", "GB/s", peak_gbps, "device copy, median 100 ms block"),
            ("together_tflops", "TFLOP/s", peak_tflops, "GEMM beside the copy (and the all-reduce)"),
            ("together_gbps", "GB/s", peak_gbps, "copy beside the GEMM (and the all-reduce)"),
            ("burst_tflops", "TFLOP/s", peak_tflops, "the same GEMM as a burst: 10 iterations after 3"),
            ("burst_gbps", "GB/s", peak_gbps, "the same copy as a burst")):
        if figures_of.get(name) is not None:
            gpucert.record(name, figures_of[name], unit=unit, direction="higher", params=where, peak=peak, note=note)
    for name in ("tflops_of_burst_pct", "gbps_of_burst_pct"):
        if figures_of.get(name) is not None:
            gpucert.record(name, figures_of[name], unit="%", direction="higher", params=where,
                           note="sustained ÷ burst: what minutes of work keep of a burst's figure")
    if figures_of.get("together_work_pct") is not None:
        gpucert.record("together_work_pct", figures_of["together_work_pct"], unit="%", direction="higher",
                       params=where, note="together ÷ alone, GEMM's share plus the copy's: what the GPU "
                                          "keeps of both when they share it")
    allreduce = phases.get("together", {}).get("allreduce")
    if allreduce:
        if allreduce.get("busbw_gbps") is not None:
            gpucert.record("allreduce_busbw_gbps", allreduce["busbw_gbps"], unit="GB/s", direction="higher",
                           params=where, note=f"{allreduce['count']} all-reduces of {config.allreduce_bytes >> 20} MiB "
                                              "during the together phase")
        if allreduce.get("error"):
            gpucert.record_error("allreduce_busbw_gbps", allreduce["error"], unit="GB/s", params=where)
    for phase, metric in (("gemm", "tflops"), ("hbm", "gbps"), ("together", "tflops")):
        series = phases.get(phase) or {}
        if series.get("t") and series.get(metric):
            gpucert.timeline(f"GPU {rank} {phase} {'TFLOP/s' if metric == 'tflops' else 'GB/s'}",
                             series["t"], series[metric])
        if series.get("status") not in (None, "ok"):
            gpucert.record_error(f"{phase}_phase", f"{series['status']}: {series.get('error')}", unit="",
                                 params=where)
    if not out.get("complete"):
        gpucert.finding("burnin", notice=f"GPU {rank}: the burn-in did not reach its end; what it measured is kept")
