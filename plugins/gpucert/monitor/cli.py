"""`gpucert monitor`: sample the GPUs, the host and (optionally) a vLLM server for a while."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from gpucert import redaction

from .attach import nvml_module
from .sampler import Monitor, MonitorConfig


def register(subparsers) -> None:
    mon = subparsers.add_parser("monitor", help="sample GPUs (NVML), host and vLLM /metrics every N ms")
    mon.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to sample")
    mon.add_argument("--interval-ms", type=float, default=100.0, help="sampling interval (>= 20 ms)")
    mon.add_argument("--counter-interval-ms", type=float, default=1000.0,
                     help="how often at most the cumulative counters (energy, PCIe/NVLink bytes, ECC, host CPU) "
                          "are read; less often where reading them would take over 0.5%% of a core")
    mon.add_argument("--out", help="the columnar sample file to keep (.npz) (default: none kept: the samples go to a "
                          "temporary folder, removed when the command ends)")
    mon.add_argument("--vllm-metrics", metavar="URL",
                     help="a vLLM server's /metrics, e.g. http://127.0.0.1:8000/metrics (default: none, "
                          "GPUs and host only)")
    mon.add_argument("--no-nvml-events", action="store_true",
                     help="do not listen for NVML's XID and ECC events (default: listen; off, their figures are "
                          "null — e.g. to compare the sampler's lateness without the listener)")
    mon.add_argument("--json", action="store_true", help="print the result as JSON")
    mon.set_defaults(run=run_monitor)


def run_monitor(args) -> int:
    from gpucert.cli import CommandError
    if not args.duration > 0:
        raise CommandError("--duration must be > 0")
    if args.out:
        return _run(args, Path(args.out), kept=True)
    # Without --out the samples only feed the summary: they go to a temporary folder that is
    # removed however the command ends (a result, bad input, a sampler that did not start, a
    # Ctrl-C) — a monitor run by hand every few minutes, or by a script, must not fill /tmp.
    # _run stops the sampler before it returns or raises: nothing writes there while it goes.
    with tempfile.TemporaryDirectory(prefix="gpucert-monitor-", ignore_cleanup_errors=True) as folder:
        return _run(args, Path(folder) / "monitor.npz", kept=False)


def _run(args, out: Path, kept: bool) -> int:
    from gpucert.cli import CommandError
    try:
        config = MonitorConfig(str(out), interval_s=args.interval_ms / 1e3, vllm_metrics_url=args.vllm_metrics,
                               counter_interval_s=args.counter_interval_ms / 1e3,
                               nvml_module=nvml_module(), nvml_events=not args.no_nvml_events)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if out.exists() and out.is_dir():
        raise CommandError(f"--out {out} is a folder")
    monitor = Monitor(config)
    try:
        try:
            monitor.start()
        except RuntimeError as err:  # it did not start in time: one line, not a traceback
            raise CommandError(str(err)) from None
        try:
            time.sleep(args.duration)
        except KeyboardInterrupt:
            pass  # what was sampled so far is still summarized
        final = monitor.stop()
        # the whole run: its events, and the repair counters' growth from the start to the stop
        figures = monitor.summary()
        meta = monitor.meta
    finally:
        # every way out (also a Ctrl-C inside start() or a second one inside stop()) leaves no
        # sampler writing: the caller removes the temporary folder next. Once stopped, a no-op.
        monitor.stop()
    # the figure the ≤ 2 % target is about: the sampler's own CPU after its first second (start-up
    # and the first /metrics connection would make a short run report several times what a long one costs)
    figures["host"]["sampler_cpu_steady_pct"] = final.get("cpu_steady_pct")
    result = {"samples": figures["samples"], "interval_ms": args.interval_ms,
              "counter_interval_ms": args.counter_interval_ms,
              "counter_spacing_ms": [None if v is None else v * 1e3 for v in (final.get("counter_spacing_s") or (None, None))],
              "counter_reads": final.get("counter_reads"), "jitter_ms": figures["jitter_ms"],
              "vllm_metrics_filtered": final.get("vllm_metrics_filtered"),
              "missed_ticks": final.get("missed"), "duration_s": figures["duration_s"],
              # null: no --out, the samples were in a temporary file, removed on the way out
              "out": str(out) if kept else None,
              "gpus": meta.get("gpus", []), "notes": sorted(set(meta.get("notes", []) + final.get("notes", []))),
              "sources": {"nvml": figures["gpus"], "host": figures["host"], "vllm": figures["vllm"]}}
    # a note may quote the /metrics URL, with a password in it
    redaction.register_url(args.vllm_metrics)
    result = redaction.redact_obj(result)
    if args.json:
        json.dump(result, sys.stdout, indent=1, default=str)
        print()
    else:
        _print_text(result)
    return 0


def _print_text(result: dict) -> None:
    j = result["jitter_ms"]
    print(f"{result['samples']} samples every {result['interval_ms']:g} ms over {result['duration_s']:.1f} s; "
          f"jitter p50 {_fmt(j['p50'])} ms, p99 {_fmt(j['p99'])} ms; "
          + (f"file {result['out']}" if result["out"] else "samples not kept (--out FILE.npz keeps them)"))
    for note in result["notes"]:
        print(f"note: {note}")
    for index, gpu in result["sources"]["nvml"].items():
        print(f"gpu{index}: util {_fmt(gpu['util_gpu_mean_pct'])} % (peak {_fmt(gpu['util_gpu_peak_pct'])}), "
              f"memory peak {_fmt(gpu['mem_used_peak_gib'])} GiB, power {_fmt(gpu['power_mean_w'])} W "
              f"(peak {_fmt(gpu['power_peak_w'])}), energy {_fmt(gpu['energy_j'])} J, "
              f"slowdowns {', '.join(gpu['slowdown_reasons']) or 'none'}; {_health_text(gpu)}")
    host = result["sources"]["host"]
    print(f"host: CPU busy {_fmt(host['cpu_busy_mean_pct'])} % (peak {_fmt(host['cpu_busy_peak_pct'])}), "
          f"RAM peak {_fmt(host['mem_used_peak_gib'])} GiB, sampler {_fmt(host['sampler_cpu_steady_pct'])} % of a core (steady)")
    if result["sources"]["vllm"]:
        v = result["sources"]["vllm"]
        print(f"vllm: running peak {_fmt(v['running_peak'])}, waiting peak {_fmt(v['waiting_peak'])}, "
              f"KV cache peak {_fmt(v['kv_cache_usage_peak_pct'])} %, preemptions {_fmt(v['preemptions'])}")


def _health_text(gpu: dict) -> str:
    """The GPU's faults and slowdowns in words; "?" where the figure is unknown (None)."""
    xids = gpu["xid_events"]
    xid = "XID ?" if xids is None else f"XID {len(xids)}" + (
        f" ({', '.join(str(e['xid']) for e in xids)})" if xids else "")
    ecc = gpu["ecc_events"] or {}
    ecc_text = f"ECC events {_count(ecc.get('single_bit'))} single-bit / {_count(ecc.get('double_bit'))} double-bit"
    remap = gpu["row_remap_new"]
    if remap is None:
        remap_text = "row remaps ?"
    else:
        flags = [flag for flag in ("pending", "failure") if remap[flag]]
        remap_text = (f"row remaps +{_count(remap['corrected'])} corrected / +{_count(remap['uncorrected'])} uncorrected"
                      + (f" ({', '.join(flags)})" if flags else ""))
    pages = gpu["retired_pages_new"]
    pages_text = ("retired pages ?" if pages is None
                  else f"retired pages +{_count(pages['single_bit'])} / +{_count(pages['double_bit'])}")
    return (f"{xid}, {ecc_text}, {remap_text}, {pages_text}; slowdown thermal {_seconds(gpu['thermal_slowdown_s'])}, "
            f"power {_seconds(gpu['power_slowdown_s'])}; SM clock drop {_fmt(gpu['sm_clock_drop_pct'])} %")


def _count(value) -> str:
    return "?" if value is None else str(value)


def _seconds(value) -> str:
    return "? s" if value is None else f"{value:.2f} s"


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3g}"
