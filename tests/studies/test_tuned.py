"""The tuned configuration and its story: from this session's batching study (its best point under
the SLOs at the tuned level) or, without one, the plan's candidates measured here, the best
configuration; then the defaults and it, alternately, each on `starts` fresh engine starts at the
tuned level (and offline, LLM.generate): the gain with a Welch interval over the starts, the exact
`vllm serve …` line, and why, from what the load, the monitor and the engine showed."""

from __future__ import annotations

import statistics
import time

import pytest

from gpucert.serving.summary import measured_window, summarize
from gpucert.studies.analysis import SLO_SHARE_PCT, best_under_slo, explain, serve_line
from gpucert.studies.plan import Point
from gpucert.noise import ratio_interval

from ..inference.engine_setup import engine_config, no_local_engine
from ..inference.load import prompts_for, run_level
from .conftest import study_load

pytestmark = pytest.mark.study


def _measure(target, level: int, loads) -> dict:
    load = target.load
    runs = [run_level(target, level, load.requests_at(level), repeat=r) for r in range(max(load.repeats, 1))]
    per = [summarize(run.measured, load.slo) for run in runs]
    windows = [measured_window(run.measured) for run in runs]
    for window, summary in zip(windows, per):
        loads.add(window, summary.total_output_tokens)
    windows = [w for w in windows if w]

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None
    return {"output_tok_s": mean(s.output_tokens_per_s for s in per if s.completed),
            "tpot_ms_p99": mean(s.tpot_ms.get("p99") for s in per), "ttft_ms_p99": mean(s.ttft_ms.get("p99") for s in per),
            "slo_attainment_pct": mean(s.slo_attainment_pct for s in per), "failed": sum(s.failed for s in per),
            "window": (min(w[0] for w in windows), max(w[1] for w in windows)) if windows else None}


def _choose(plan, results: list[dict], measure_candidate) -> tuple[Point | None, str]:
    """The best point under the SLOs at the tuned level: from the batching study's results in this
    session, else measured here from the plan's candidates (a lone candidate is taken as it is).
    (point, how it was chosen)"""
    level = plan.tuned.concurrency
    rows = [r for r in results if r["concurrency"] == level and r.get("output_tok_s") is not None]
    source = "this session's batching study"
    if not rows and len(plan.tuned.points) == 1:  # nothing to choose between: no start spent on it
        point = plan.tuned.points[0]
        return point, f"the plan's one candidate (not measured against others), judged at concurrency {level:,}"
    if not rows:
        rows = [measure_candidate(point) for point in plan.tuned.points]
        rows = [r for r in rows if r.get("output_tok_s") is not None]
        source = "the plan's candidates, measured once each"
    under = best_under_slo(rows)
    pick = under or max(rows, key=lambda r: r["output_tok_s"], default=None)
    if pick is None:
        return None, source
    how = f"{source}: most output tok/s at concurrency {level:,}" + (
        f" with ≥ {SLO_SHARE_PCT:g} % of requests within the SLOs" if under else " (no point met the SLOs)")
    return Point(pick["point"], pick["engine"]), how


def _side(figures: dict | None) -> dict:
    if not figures:
        return {}
    utils = [g["util_gpu_mean_pct"] for g in figures["gpus"].values() if g.get("util_gpu_mean_pct") is not None]
    return {"gpu_util_mean_pct": statistics.fmean(utils) if utils else None,
            "preemptions": (figures.get("vllm") or {}).get("preemptions"),
            "host_cpu_busy_mean_pct": (figures.get("host") or {}).get("cpu_busy_mean_pct")}


def test_tuned(gpucert, plan, study_target, study_engines, study_results, study_loads, gpucert_monitor, request,
               tuned_concurrency):
    tuned = plan.tuned
    level = tuned_concurrency
    load = study_load(request.config)

    def measure_candidate(point):
        return {"point": point.id, "engine": point.engine, "concurrency": level,
                **_measure(study_target(tuned.engine, point, load), level, study_loads)}

    best, how = _choose(plan, study_results, measure_candidate)
    if best is None:
        pytest.fail("no configuration to tune from: the batching study measured nothing at "
                    f"concurrency {level:,} and the plan has no candidates that ran", pytrace=False)
    default = Point("default", {})
    sides: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(tuned.starts):  # alternating: each start a fresh engine, drift shared by both
        for name, point in (("default", default), ("tuned", best)):
            target = study_target(tuned.engine, point, load)
            figures = _measure(target, level, study_loads)
            if gpucert_monitor and figures["window"]:
                figures.update(_side(gpucert_monitor.figures(*figures["window"])))
            figures["argv"] = target.server.config.argv() if target.server else None
            figures["cudagraph_max"] = target.facts.get("max_cudagraph_capture_size")  # from its log
            sides[name].append(figures)
            # each start on the card as it ends: a failure or Ctrl-C later keeps it
            gpucert.finding("start", side=name, start=len(sides[name]), output_tok_s=figures["output_tok_s"],
                            tpot_ms_p99=figures["tpot_ms_p99"], ttft_ms_p99=figures["ttft_ms_p99"],
                            failed=figures["failed"])
    values = {name: [s["output_tok_s"] for s in runs if s["output_tok_s"] is not None] for name, runs in sides.items()}

    def mean_of(name: str, key: str):
        got = [s[key] for s in sides[name] if s.get(key) is not None]
        return statistics.fmean(got) if got else None

    for name in ("default", "tuned"):
        if values[name]:
            gpucert.record(f"{name}_output_tok_s", statistics.fmean(values[name]), unit="tok/s", direction="higher",
                           samples=values[name], stat="mean", note=f"concurrency {level:,}, mean of {len(values[name])} engine starts")
        if mean_of(name, "tpot_ms_p99") is not None:
            gpucert.record(f"{name}_tpot_ms_p99", mean_of(name, "tpot_ms_p99"), unit="ms", direction="lower",
                           samples=[s["tpot_ms_p99"] for s in sides[name] if s.get("tpot_ms_p99") is not None],
                           stat="mean", note=f"concurrency {level:,}, mean of the engine starts")
    gain = ratio_interval(values["default"], values["tuned"])
    if gain:
        change, low, high, label = gain
        gpucert.record("served_gain_pct", change, unit="%", direction="higher", ci=(low, high), ci_method=label,
                       note=f"tuned over default output tok/s at concurrency {level:,}: [{low:+.1f} %, {high:+.1f} %] ({label})")
    changed = {k: (getattr(engine_config(request.config, tuned.engine), k), v) for k, v in best.engine.items()}
    summary = {name: {key: mean_of(name, key) for key in ("output_tok_s", "tpot_ms_p99", "ttft_ms_p99",
                                                           "gpu_util_mean_pct", "preemptions", "host_cpu_busy_mean_pct",
                                                           "cudagraph_max")}
               for name in sides}
    argv = next((s["argv"] for s in sides["tuned"] if s.get("argv")), None)
    dummy = engine_config(request.config, {**tuned.engine, **best.engine}).load_format == "dummy"
    gpucert.finding("tuned", point=best.id, chosen=how, settings=", ".join(f"{k}={v}" for k, v in best.engine.items()),
                    serve=serve_line(argv, "dummy weights: give your model's path or id") if argv and dummy else
                    serve_line(argv) if argv else None,
                    gain=(f"{gain[0]:+.1f} % [{gain[1]:+.1f} %, {gain[2]:+.1f} %] ({gain[3]})" if gain else None),
                    why=explain(changed, summary["default"], summary["tuned"], level),
                    default=summary["default"], tuned=summary["tuned"])

    if tuned.offline:
        _offline_gain(gpucert, plan, best, study_engines, request, load, study_loads)


def _offline_gain(gpucert, plan, best, study_engines, request, load, loads):
    """LLM.generate of `offline_prompts` prompts, default and tuned alternately, `offline_starts` each."""
    from gpucert.serving.offline import run_offline

    tuned = plan.tuned
    engines = {name: engine_config(request.config, {**tuned.engine, **point})
               for name, point in (("default", {}), ("tuned", best.engine))}
    missing = no_local_engine(engines["default"])
    if missing or request.config.getoption("--engine-cmd"):
        gpucert.finding("tuned", notice=f"offline gain not measured: {missing or 'an --engine-cmd engine has no offline mode'}")
        return
    study_engines.release()  # LLM.generate needs the GPUs the server holds
    rates: dict[str, list[float]] = {"default": [], "tuned": []}
    count = tuned.offline_prompts
    for start in range(tuned.offline_starts):
        for name, engine in engines.items():
            result = run_offline(engine, [count], lambda n, level, repeat=0: prompts_for(load, n, level, repeat),
                                 study_engines.workdir / f"offline-{name}-{start + 1}-{int(time.time())}",
                                 ignore_eos=load.ignore_eos)
            rates[name] += result.rates(count)
            for line in result.levels.get(count, []):
                loads.add(line.get("window_monotonic"), line.get("output_tokens") or 0)
    for name, values in rates.items():
        if values:
            gpucert.record(f"offline_{name}_output_tok_s", statistics.fmean(values), unit="tok/s", direction="higher",
                           samples=values, stat="mean", note=f"{count:,} prompts, mean of {len(values)} runs")
    gain = ratio_interval(rates["default"], rates["tuned"])
    if gain:
        gpucert.record("offline_gain_pct", gain[0], unit="%", direction="higher", ci=(gain[1], gain[2]), ci_method=gain[3],
                       note=f"tuned over default, {count:,} prompts: [{gain[1]:+.1f} %, {gain[2]:+.1f} %] ({gain[3]})")
