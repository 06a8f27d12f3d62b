"""The pytest plugin: options, markers, the `gpucert` fixture and the session hooks. Thin on
purpose — the work is in session.Run (collect, judge, store) and report.card (render)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path

import pytest
from _pytest import junitxml  # its stash key: suite-level properties of --junitxml

from .baselines import BaselineError, validate_profile
from .judge import blocks, failure_line
from . import certification, history, redaction
from .monitor.attach import SessionMonitor
from .phases import phase
from .progress import Progress, claim_report_dir, duration_text, log, release_report_dir
from .recorder import CheckRecorder, CheckResult
from .report import card, prometheus
from .session import Run, RunOptions
from .thresholds import ThresholdsError, Thresholds, load as load_thresholds

MARKERS = {
    "hardware": "hardware check: the node reaches its physics (stack, GEMM, memory, P2P, NCCL)",
    "inference": "inference check: a real serving engine under load (TTFT, TPOT, ITL, throughput)",
    "forensics": "forensics check: explains latency spikes from traces and monitor samples",
    "study": "optimization study: KV-cache saturation, batching, precision, capacity under SLO (make study)",
    "burnin": "burn-in: minutes of sustained GEMM and HBM load on every GPU, with the monitor's slowdowns, ECC and XIDs (make burnin)",
    "fleet": "fleet check: one node of a Ray cluster, its node-level checks run there, judged against the fleet (make fleet)",
    "gpucert_check(name=None, family=None)": "override a check's stable name and baseline family "
                                              "(default: test function and module name without 'test_')",
}
CHECK_MARKERS = ("hardware", "inference", "forensics", "study", "burnin", "fleet")
RUN_KEY = pytest.StashKey[Run]()
MONITOR_KEY = pytest.StashKey[SessionMonitor]()
SECRETS_KEY = pytest.StashKey[int]()  # this session's scope in gpucert.redaction


class GpucertWarning(UserWarning):
    """A metric in its warning band, or better than its baseline beyond the band."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpucert", "gpucert certification")
    group.addoption("--update-baselines", action="store_true", default=False,
                    help="merge this run's measured metrics into the profile's baselines (review with git diff)")
    group.addoption("--certify", action="store_true", default=False,
                    help="exit non-zero when the node is not certified — also when checks it needs could not "
                         "run here (exit 6; pytest's own codes otherwise); make certify and make nightly set it")
    group.addoption("--baselines-dir", default=None, metavar="DIR",
                    help="folder of baselines, one subfolder per profile (default: baselines/)")
    group.addoption("--profile", default=None, metavar="NAME",
                    help="hardware profile whose baselines apply (default: derived from the snapshot, "
                         "e.g. 2xH100-80GB-HBM3-NV18)")
    group.addoption("--thresholds", default=None, metavar="FILE",
                    help="tolerance, SLO, datasheet and quarantine rules (default: thresholds.yaml)")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="where report.html, metrics.json and candidate baselines go "
                         "(default: a new folder per run under reports/)")
    group.addoption("--snapshot-from", default=None, metavar="DIR",
                    help="take the stack snapshot from captured nvidia-smi outputs in DIR instead of this machine")
    group.addoption("--missing-baseline", default="new", choices=("new", "fail"),
                    help="a metric with no baseline: 'new' (judged on absolute limits) or 'fail' (nightly CI)")
    group.addoption("--monitor", default="inference", choices=("inference", "all", "off"),
                    help="attach the resource monitor (NVML, host, vLLM /metrics) to the inference checks "
                         "(default), to every check, or to none")
    group.addoption("--monitor-interval-ms", type=float, default=100.0, metavar="MS",
                    help="the monitor's sampling interval (>= 20 ms; default 100)")
    group.addoption("--history-dir", default=None, metavar="DIR",
                    help="nightly: draw each headline metric's trend over the last runs recorded in "
                         "DIR/<profile>/ (marking stack changes between them), then add this run's record")
    group.addoption("--time-budget-min", type=float, default=None, metavar="MIN",
                    help="wall-clock budget: checks that would start after it are skipped (with that reason "
                         "on the card); a check still running at the budget plus a grace period is "
                         "interrupted (what it measured kept, marked incomplete)")
    hardware = parser.getgroup("gpucert hardware", "gpucert hardware checks")
    hardware.addoption("--nccl-backend", default="nccl", choices=("nccl", "gloo"),
                       help="nccl (default): the GPUs' collectives; gloo: the same sweep on CPU processes "
                            "(rehearses the check's plumbing on a machine without GPUs, certifies nothing)")
    hardware.addoption("--nccl-nproc", type=int, default=None, metavar="N",
                       help="ranks of the NCCL sweep (default: every GPU with nccl, 2 with gloo)")
    hardware.addoption("--nccl-max-bytes", default=None, metavar="SIZE",
                       help="largest message of the NCCL sweep, e.g. 1G (default: 8G with nccl, 1M with gloo)")
    serving = parser.getgroup("gpucert serving", "gpucert inference checks")
    serving.addoption("--endpoint", default=None, metavar="URL",
                      help="certify this OpenAI-compatible server (http://HOST:PORT/v1) instead of starting vLLM")
    serving.addoption("--endpoint-model", default=None, metavar="NAME",
                      help="the model name the endpoint serves (default: the first of GET /v1/models)")
    serving.addoption("--api-key-env", default=None, metavar="VAR",
                      help="environment variable holding the endpoint's API key (the key is never logged)")
    serving.addoption("--engine-python", default=None, metavar="PATH",
                      help="the Python that has vLLM, to run `vllm serve` with (default: this one)")
    serving.addoption("--engine-cmd", default=None, metavar="JSON",
                      help="start this command instead of `vllm serve`, as a JSON list with {port} where the "
                           "port goes and {tensor_parallel_size} etc. an engine setting's value (another "
                           "OpenAI-compatible engine or build, under the same lifecycle: health wait, log, "
                           "SIGTERM); gpucert does not check its GPUs")
    serving.addoption("--engine-opt", action="append", default=[], metavar="KEY=VALUE",
                      help="override an engine setting of gpucert/data/serving.yaml (model, "
                           "tensor_parallel_size, max_num_seqs, distributed_executor_backend, …); repeatable")
    serving.addoption("--load-opt", action="append", default=[], metavar="KEY=VALUE",
                      help="override a load setting (concurrency=1,16,64, dataset=random|synthetic|sharegpt|"
                           "jsonl, dataset_path, input_len, output_len, range_ratio, endpoint, token_ids, "
                           "extra_body=JSON, …); repeatable")
    studies = parser.getgroup("gpucert studies", "gpucert optimization studies (tests/studies, make study)")
    studies.addoption("--studies-file", default=None, metavar="FILE",
                      help="the study plan: what each study varies (default: gpucert/data/studies.yaml)")
    studies.addoption("--workloads-file", default=None, metavar="FILE",
                      help="the workload plan: prefix, multi-turn and trace workloads, their levels "
                           "(tests/workloads, make workloads; default: gpucert/data/workloads.yaml)")
    burn = parser.getgroup("gpucert burn-in", "gpucert burn-in (tests/burnin, make burnin)")
    burn.addoption("--burnin-min", type=float, default=10.0, metavar="MIN",
                   help="burn-in duration in minutes, split over its GEMM, HBM and together phases (default: 10)")
    burn.addoption("--burnin-devices", default=None, metavar="LIST",
                   help="devices to burn in, e.g. cuda:0,cuda:1, or cpu,cpu to rehearse on the CPU (certifies "
                        "nothing) (default: every visible GPU)")
    burn.addoption("--burnin-dtype", default=None, metavar="DTYPE",
                   help="the GEMM's dtype, the served model's (default: bf16 on GPUs, fp32 on the CPU)")
    forensics = parser.getgroup("gpucert forensics", "gpucert trace forensics (tests/forensics, make forensics)")
    forensics.addoption("--forensics-file", default=None, metavar="FILE",
                        help="the captures: engines, load levels, profiler window "
                             "(default: gpucert/data/forensics.yaml)")
    fleet = parser.getgroup("gpucert fleet", "gpucert across a Ray cluster (tests/fleet, make fleet)")
    fleet.addoption("--ray-address", default=None, metavar="ADDRESS",
                    help="run the node-level checks on every GPU node of this Ray cluster (auto, HOST:PORT or "
                         "ray://HOST:PORT); every node needs this repository at the same path and its venv")
    fleet.addoption("--fleet-args", default="tests/hardware -m hardware", metavar="ARGS",
                    help="the pytest arguments each node runs, one shell-quoted string (default: %(default)s)")
    fleet.addoption("--fleet-python", default=sys.executable, metavar="PATH",
                    help="the Python on the nodes that has gpucert (default: this one, %(default)s)")
    fleet.addoption("--fleet-timeout-min", type=float, default=60.0, metavar="MIN",
                    help="a node still running this long after the start is stopped and reported hung (default: 60)")
    fleet.addoption("--fleet-nccl-ops", default="all_reduce,all_gather,reduce_scatter,alltoall", metavar="OPS",
                    help="collectives of the sweep across nodes, comma-separated (default: %(default)s); its "
                         "sizes and backend follow --nccl-max-bytes and --nccl-backend")
    fleet.addoption("--fleet-ranks-per-node", type=int, default=None, metavar="N",
                    help="ranks per node of the sweeps across nodes (default: every GPU of the node with nccl, "
                         "1 with gloo)")
    fleet.addoption("--fleet-pairs", default="parallel", choices=("parallel", "serial", "off"),
                    help="the pairwise node tests: each round's disjoint pairs at once (default), one pair at a "
                         "time, or none")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.option.help:
        return
    _register_secrets(config)
    root = _project_dir(config)
    thresholds_path = Path(config.option.thresholds) if config.option.thresholds else root / "thresholds.yaml"
    try:
        if config.option.thresholds or thresholds_path.exists():
            thresholds = load_thresholds(thresholds_path)
        else:
            thresholds = Thresholds("(built-in defaults: no thresholds.yaml)", {}, [], [])
        profile = validate_profile(config.option.profile) if config.option.profile else None
    except (ThresholdsError, BaselineError) as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    options = RunOptions(
        baselines_dir=Path(config.option.baselines_dir) if config.option.baselines_dir else root / "baselines",
        report_dir=Path(config.option.report_dir) if config.option.report_dir else root / "reports" / f"run-{stamp}",
        thresholds=thresholds,
        profile=profile,
        snapshot_from=config.option.snapshot_from,
        update_baselines=config.option.update_baselines,
        missing_baseline=config.option.missing_baseline,
        history_dir=Path(config.option.history_dir) if config.option.history_dir else None,
    )
    nproc = config.getoption("--nccl-nproc", None)
    if nproc is not None and nproc < 2:
        raise pytest.UsageError(f"gpucert: --nccl-nproc must be at least 2, got {nproc}")
    if config.getoption("--nccl-max-bytes", None):
        from .physics.units import parse_size
        try:
            parse_size(config.getoption("--nccl-max-bytes"))
        except ValueError as exc:
            raise pytest.UsageError(f"gpucert: --nccl-max-bytes: {exc}") from None
    if config.getoption("--engine-cmd", None):
        from .serving.vllm_config import engine_command
        try:
            engine_command(config.getoption("--engine-cmd"))
        except ValueError as exc:
            raise pytest.UsageError(f"gpucert: {exc}") from None
    if config.getoption("--studies-file", None):
        from .studies.plan import PlanError, load_plan
        try:
            load_plan(config.getoption("--studies-file"))
        except PlanError as exc:
            raise pytest.UsageError(f"gpucert: {exc}") from None
    if config.getoption("--workloads-file", None):
        from .serving.workload_plan import PlanError as WorkloadPlanError, load_plan as load_workloads
        try:
            load_workloads(config.getoption("--workloads-file"))
        except WorkloadPlanError as exc:
            raise pytest.UsageError(f"gpucert: {exc}") from None
    burnin_min = config.getoption("--burnin-min", None)
    if burnin_min is not None and not (burnin_min > 0 and math.isfinite(burnin_min)):
        raise pytest.UsageError(f"gpucert: --burnin-min must be a positive number of minutes, got {burnin_min:g}")
    if config.getoption("--burnin-dtype", None):
        from .physics.gemm import DTYPES as GEMM_DTYPES
        if config.getoption("--burnin-dtype") not in GEMM_DTYPES:
            raise pytest.UsageError(f"gpucert: --burnin-dtype must be one of {', '.join(GEMM_DTYPES)}, "
                                    f"got {config.getoption('--burnin-dtype')!r}")
    if config.getoption("--forensics-file", None):
        from .forensics.plan import PlanError as ForensicsPlanError, load_plan as load_forensics_plan
        try:
            load_forensics_plan(config.getoption("--forensics-file"))
        except ForensicsPlanError as exc:
            raise pytest.UsageError(f"gpucert: {exc}") from None
    if config.getoption("--ray-address", None):  # (--fleet-args has a default: it matters only with one)
        from .fleet.options import FleetError, configure as configure_fleet
        try:
            configure_fleet(config)  # the node args parse; the cluster answers (before anything runs)
        except FleetError as exc:
            raise pytest.UsageError(f"gpucert: {exc}") from None
    budget = config.option.time_budget_min
    if budget is not None and not (budget > 0 and math.isfinite(budget)):
        raise pytest.UsageError(f"gpucert: --time-budget-min must be a positive number of minutes, got {budget:g}")
    run = Run(options)
    try:
        monitor = SessionMonitor(config.option.monitor, config.option.monitor_interval_ms, options.report_dir)
    except ValueError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None
    config.stash[RUN_KEY] = run
    config.stash[MONITOR_KEY] = monitor
    config.pluginmanager.register(RunHooks(run, config), "gpucert-run")


def _register_secrets(config: pytest.Config) -> None:
    """This session's secrets, by value, before anything is measured or written: the endpoint's
    API key and the endpoint URL's password or key (a scope of their own, so that a pytester
    session run in this process leaves none behind, and takes none of ours)."""
    config.stash[SECRETS_KEY] = redaction.push_scope()
    redaction.register_url(config.getoption("--endpoint", None))
    variable = config.getoption("--api-key-env", None)
    if variable and not redaction.register(os.environ.get(variable)):
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"gpucert: the API key in {variable} is shorter than {redaction.MIN_LENGTH} characters: "
            "too short to be redacted by value from the outputs"), stacklevel=2)


def pytest_unconfigure(config: pytest.Config) -> None:
    scope = config.stash.get(SECRETS_KEY, None)
    if scope is not None:
        redaction.pop_scope(scope)
        del config.stash[SECRETS_KEY]


def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest's own log handlers (captured logs in failure reports and JUnit, --log-cli, --log-file)
    redact the records as gpucert.log does."""
    logging_plugin = session.config.pluginmanager.get_plugin("logging-plugin")
    for name in ("caplog_handler", "report_handler", "log_cli_handler", "log_file_handler"):
        handler = getattr(logging_plugin, name, None)
        if handler is not None and not any(isinstance(f, redaction.RedactingFilter) for f in handler.filters):
            handler.addFilter(redaction.RedactingFilter())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Every test's report leaves here redacted, before the terminal, --junitxml and gpucert's own
    hooks read it: a failed check's message, traceback, captured output and logs may quote a
    server's answer that echoed the key."""
    report = yield
    if redaction.active():
        report.longrepr = _scrubbed(report.longrepr, set())
        report.sections = [(title, redaction.redact(text)) for title, text in report.sections]
        report.user_properties = [(name, redaction.redact_obj(value)) for name, value in report.user_properties]
    return report


def _scrubbed(value, seen: set):
    """`value` with its strings redacted, keeping the structure pytest's writers expect (a skip's
    (path, line, reason) tuple; the traceback entries and crash line of a failure, which are
    pytest's own repr objects and are changed in place)."""
    if isinstance(value, str):
        return redaction.redact(value)
    if id(value) in seen:
        return value
    seen.add(id(value))
    if isinstance(value, tuple):
        items = [_scrubbed(v, seen) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        value[:] = [_scrubbed(v, seen) for v in value]
    elif isinstance(value, dict):
        for key in value:
            value[key] = _scrubbed(value[key], seen)
    elif hasattr(value, "__dict__") and type(value).__module__.startswith("_pytest."):
        for attr, item in list(vars(value).items()):
            object.__setattr__(value, attr, _scrubbed(item, seen))
    return value


def _project_dir(config: pytest.Config) -> Path:
    """Where thresholds.yaml, baselines/ and reports/ live by default: the first of the ini file's
    folder, pytest's rootdir and the invocation folder that holds a thresholds.yaml. (rootdir
    alone is not enough: pytest derives it from path-like arguments, so `--baselines-dir /tmp/b`
    can move it to /tmp and drop the ini file.)"""
    candidates = [Path(config.inipath).parent] if config.inipath else []
    candidates += [Path(config.rootpath), Path(config.invocation_params.dir)]
    for folder in candidates:
        if (folder / "thresholds.yaml").is_file():
            return folder
    return candidates[0]


def _run(config: pytest.Config) -> Run | None:
    return config.stash.get(RUN_KEY, None)


def _is_check(item: pytest.Item) -> bool:
    return "gpucert" in getattr(item, "fixturenames", ()) or any(item.get_closest_marker(m) for m in CHECK_MARKERS)


def _check_result(item: pytest.Item) -> CheckResult:
    marker = item.get_closest_marker("gpucert_check")
    name = getattr(item, "originalname", item.name)
    family = Path(str(item.path)).stem
    name = (marker.kwargs.get("name") if marker else None) or name.removeprefix("test_")
    family = (marker.kwargs.get("family") if marker else None) or family.removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec else {}
    markers = [m for m in CHECK_MARKERS if item.get_closest_marker(m)]
    return CheckResult(item.nodeid, name, family, params, markers)


@pytest.fixture(scope="session")
def gpucert_report_dir(request: pytest.FixtureRequest) -> Path:
    """This run's report folder (engine logs and other large files go beside the card)."""
    run = _run(request.config)
    if run is None:
        pytest.skip("gpucert plugin is not configured in this session")
    run.options.report_dir.mkdir(parents=True, exist_ok=True)
    return run.options.report_dir


@pytest.fixture(scope="session")
def gpucert_note(request: pytest.FixtureRequest):
    """A callable adding a line to the run's notes on the card (e.g. how an engine stopped)."""
    run = _run(request.config)
    return run.notes.append if run is not None else (lambda text: None)


@pytest.fixture(scope="session")
def gpucert_monitor(request: pytest.FixtureRequest) -> SessionMonitor | None:
    """The session's resource monitor (None with --monitor off): fixtures that start a server
    attach its /metrics (`attach_vllm(url)`)."""
    monitor = request.config.stash.get(MONITOR_KEY, None)
    return None if monitor is None or monitor.mode == "off" else monitor


@pytest.fixture
def gpucert(request: pytest.FixtureRequest) -> CheckRecorder:
    """Record metrics, findings and baseline artifacts of this check; the plugin judges them."""
    run = _run(request.config)
    if run is None:
        pytest.skip("gpucert plugin is not configured in this session")
    result = run.checks.get(request.node.nodeid)
    if result is None:  # a check collected late (e.g. pytester inside a check); register it now
        result = run.checks[request.node.nodeid] = _check_result(request.node)
    return CheckRecorder(run, result)



@contextlib.contextmanager
def _sigint_deferred():
    """Hold SIGINT off while a check that ran is recorded (a Ctrl-C there would leave it judged
    by nobody and shown as never run); yields `pending()`: whether one arrived meanwhile. A held
    SIGINT is delivered as the block ends. Only the main thread can hold it; elsewhere (and where
    signals cannot be masked) this is a no-op that never reports one pending."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield lambda: False
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield lambda: signal.SIGINT in signal.sigpending()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _mark_interrupted(result: CheckResult) -> None:
    result.outcome = "interrupted"
    result.message = "interrupted mid-check; what it measured before the stop is kept"


def _publish(item: pytest.Item, result: CheckResult) -> None:
    """Metrics ride on the test's user_properties, so --junitxml (and xdist) carry them: the value
    (left out when nothing finite was measured: a reader parses it as a number), unit, verdict,
    baseline, delta and the delta's 95 % interval. (Testcase properties need junit_family=xunit1,
    set in pyproject.toml.)"""
    props = item.user_properties
    for metric in result.metrics:  # (redacted with the report: pytest_runtest_makereport)
        key = f"gpucert:{metric.key}"
        if metric.value is not None and math.isfinite(metric.value):
            props.append((key, metric.value))
        props.append((f"{key}:unit", metric.unit))
        j = metric.judgement
        if j:
            props.append((f"{key}:verdict", j.verdict))
            if j.baseline is not None:
                props.append((f"{key}:baseline", j.baseline))
            if j.delta_pct is not None:
                props.append((f"{key}:delta_pct", round(j.delta_pct, 3)))
            if j.delta_ci_pct:
                props.append((f"{key}:delta_ci_pct", f"{j.delta_ci_pct[0]:.3f},{j.delta_ci_pct[1]:.3f}"))


def _short_message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return report.longreprtext.strip()


def refusal_lines(changes: list) -> list[str]:
    """What was not stored as a baseline and why: one line per check (its metrics share the
    reason: a failed check stores none of them), one per metric where the merge refused it."""
    groups: dict[tuple[str, str, str], list] = {}
    for change in changes:
        if change.action == "refused":
            groups.setdefault((change.family, change.key.split("::")[0], change.reason), []).append(change)
    lines = []
    for (family, check, reason), refused in groups.items():
        if len(refused) == 1:
            lines.append(f"  {family}: {refused[0].line()}")
        else:
            lines.append(f"  {family}: ! {check}: {len(refused)} metrics not written: {reason}")
    return (["not stored as baselines (nor as candidates):"] + lines) if lines else []


class RunHooks:
    """Session hooks bound to this session's Run (registered in pytest_configure)."""

    def __init__(self, run: Run, config: pytest.Config):
        self.run = run
        self.config = config
        self.progress = Progress(config.option.time_budget_min, self._write_line)
        self.report_dir_lock: int | None = None
        self.metrics_write_failed = False  # a mid-run metrics.json write failed (reported once)
        self.write_error: str | None = None  # the final outputs could not be written: the run's error line
        self.verdict_line: str | None = None  # the certification in words: the terminal's last line

    def _write_line(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            # under -q the progress dots run on without a file name, which ensure_newline() does
            # not see: end their line first, so this one stands on its own
            writer = getattr(reporter, "_tw", None)
            if writer is not None and getattr(writer, "width_of_current_line", 0):
                writer.line()
            reporter.write_line(redaction.redact(text), bold=True)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            if _is_check(item):
                self.run.checks[item.nodeid] = _check_result(item)
        if self.run.checks and not self.config.option.collectonly:
            try:
                # first: a report folder another run writes, or a full disk, stops this run
                # before it measures anything it could not keep
                self.report_dir_lock = claim_report_dir(self.run.options.report_dir)
                self.run.prepare()
                self.progress.open_log(self.run.options.report_dir)
            except (ValueError, OSError) as exc:  # SnapshotError, BaselineError, ReportDirError: one line
                raise pytest.UsageError(f"gpucert: {exc}") from None
            log.info("run of %d check(s) on profile %s; report folder %s", len(self.run.checks), self.run.profile,
                     self.run.options.report_dir)
            self.progress.start()

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        result = self.run.checks.get(nodeid)
        if result is not None:
            self.progress.announce(result.family, sum(c.family == result.family for c in self.run.checks.values()))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        result = self.run.checks.get(item.nodeid)
        if result is not None and self.progress.over_budget():
            pytest.skip(self.progress.skip_reason(result.check_id))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        result = self.run.checks.get(item.nodeid)
        monitor = self.config.stash.get(MONITOR_KEY, None)
        monitored = result is not None and monitor is not None and monitor.wants(result.markers)
        if monitored:
            monitor.begin(item.nodeid)
        try:
            with phase(result.check_id if result is not None else item.nodeid):  # NVTX: the check in a trace
                outcome = yield
        except BaseException as exc:
            # a Ctrl-C while the monitor's window is read (a second one, after the first stopped
            # the body) must not drop what the check measured: the check is recorded, then the
            # stop goes on
            stopped = isinstance(exc, KeyboardInterrupt)
            if monitored:
                stopped = self._end_monitor(monitor, result) or stopped
            if result is not None:
                with _sigint_deferred() as sigint_pending:
                    # metrics recorded before the failure stay on the card with their verdicts
                    result.body_raised = not isinstance(exc, pytest.skip.Exception)
                    if stopped or sigint_pending():  # pytest writes no report for this check
                        _mark_interrupted(result)
                    self.run.judge_check(result)
                    _publish(item, result)
            if stopped and not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            raise
        if result is None:
            return outcome
        stopped = monitored and self._end_monitor(monitor, result)
        with _sigint_deferred() as sigint_pending:
            stopped = stopped or sigint_pending()
            if stopped:  # the body finished: its metrics stand, but the session stopped inside the check
                result.body_raised = True
                _mark_interrupted(result)
            self.run.judge_check(result)
            _publish(item, result)
        if stopped:
            raise KeyboardInterrupt
        for metric in result.metrics:
            j = metric.judgement
            if j and (j.verdict == "warn" or j.quarantined):
                warnings.warn(GpucertWarning(redaction.redact(failure_line(metric))), stacklevel=1)
        failing = [redaction.redact(failure_line(m)) for m in result.metrics if blocks(m)]
        if failing:
            # the check owning the metric fails, with one readable line per metric
            pytest.fail("\n".join(failing), pytrace=False)
        return outcome

    def _end_monitor(self, monitor: SessionMonitor, result: CheckResult) -> bool:
        """Record the check's monitor window; True when a Ctrl-C stopped that (the window is then
        lost, with a finding saying so — the check's own metrics are not)."""
        recorder = CheckRecorder(self.run, result)
        try:
            monitor.end(result, recorder)
        except KeyboardInterrupt:
            with _sigint_deferred():
                recorder.finding("monitor", notice="monitor window not recorded: the session was stopped while it was read")
            return True
        return False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.run.checks.get(report.nodeid)
        if result is None:
            return
        result.duration_s += report.duration
        if report.when == "call" or report.outcome != "passed":
            if report.skipped:
                result.outcome = "skipped"
            elif report.failed:
                result.outcome = "failed" if report.when == "call" else "error"
            elif result.outcome == "pending":
                result.outcome = "passed"
            if report.outcome != "passed" and not result.message:
                result.message = _short_message(report)
        if report.when == "teardown":
            log.info("%s: %s (%s, %.1f s)%s", result.check_id, self.run.check_verdict(result), result.outcome,
                     result.duration_s, f": {result.message}" if result.message else "")
            try:
                self.run.write_metrics("running")
            except OSError as exc:  # a full disk mid-run: the checks go on, the final write tries again
                if not self.metrics_write_failed:
                    self.metrics_write_failed = True
                    self._write_line(f"gpucert: metrics.json could not be written ({exc.strerror or exc}); "
                                     "the run goes on and tries again at its end")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.run.prepared or self.config.option.collectonly:
            return  # no check was selected, or bad input stopped the run before it measured anything
        status = "interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else "complete"
        self.run.time_budget = self.progress.stop()
        self.run.finish()
        monitor = self.config.stash.get(MONITOR_KEY, None)
        if monitor is not None:
            self.run.monitor = monitor.stop()
        for result in self.run.checks.values():
            if result.outcome == "pending":
                result.message = result.message or f"not run: the session ended {status} before this check"
        try:
            self.run.store_baselines(notify=self._notify)
        except (BaselineError, OSError) as exc:
            self.run.notes.append(f"baselines not written: {exc}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.progress.log_failure:
            self.run.notes.append(self.progress.log_failure)
        if self.run.options.history_dir is not None:  # the records read when the run was prepared
            self.run.trends = history.trends(self.run.history, history.record(self.run.to_dict(status)))
        data = self._write_outputs(status)
        if data is None:  # the report folder refused the outputs (a full disk): one line, exit 4
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            data = self.run.final_dict("failed-to-write")
        self._junit_run_properties(data)
        if self.run.options.history_dir is not None:
            try:
                path = history.append(self.run.options.history_dir, redaction.redact_obj(data))
                log.info("history record %s", path)
            except (OSError, ValueError) as exc:
                self.run.notes.append(f"history record not written: {exc}")
                if self.write_error is None and self._write_outputs(status) is None:
                    session.exitstatus = pytest.ExitCode.USAGE_ERROR
        verdict = data["certification"]  # session.to_dict decided it, also for a failed write
        self.verdict_line = f"gpucert: {verdict['line']}"
        if self.config.option.certify:
            session.exitstatus = certification.exit_status(int(session.exitstatus), verdict)
        log.info("run %s: verdict %s; card %s", data.get("status"), data["verdict"],
                 self.run.options.report_dir / "report.html")
        log.info("%s (exit %s)", verdict["line"], int(session.exitstatus))

    def _notify(self, text: str) -> None:
        """A line the person watching must see now (e.g. waiting for the baselines lock)."""
        self._write_line(f"gpucert: {text}")
        log.info(text)
        self.run.notes.append(text)

    def _write_outputs(self, status: str) -> dict | None:
        """metrics.json, report.html and metrics.prom; None when the folder refused them. Then
        metrics.json must not be left saying `running` (the last per-check write): the run
        rewrites it as `failed-to-write` where the disk allows, or removes it."""
        report_dir = self.run.options.report_dir
        try:
            self.run.write_metrics(status)
            data = card.write(report_dir)
            prometheus.write(report_dir, data)
            return data
        except OSError as exc:
            reason = exc.strerror or str(exc)
            (report_dir / "report.html").unlink(missing_ok=True)  # a half-written card reads as a whole one
            outcome = self.run.write_failed(reason)
            self.write_error = f"the run's report could not be written in {report_dir}: {reason}; {outcome}"
            log.error(self.write_error)
            return None

    def _junit_run_properties(self, data: dict) -> None:
        """The run's verdict, profile and version as the JUnit file's suite properties (this hook
        runs before junitxml's own sessionfinish writes the file: tryfirst below)."""
        xml = self.config.stash.get(junitxml.xml_key, None)
        if xml is None:
            return
        for name in ("verdict", "profile", "status", "gpucert_version"):
            xml.add_global_property(f"gpucert:run:{name}", redaction.redact_obj(data.get(name)))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        run = self.run
        if not run.prepared or self.config.option.collectonly:
            return
        tr = _RedactingWriter(terminalreporter)
        tr.section("gpucert")
        counts = run.to_dict("complete")["counts"]
        summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        tr.write_line(f"profile {run.profile} (from the {run.profile_source}); checks: {summary or 'none'}")
        for note in run.notes:
            tr.write_line(f"note: {note}")
        if run.options.update_baselines:
            written = [c for c in run.baseline_changes if c.action not in ("unchanged", "refused")]
            tr.write_line(f"baselines in {run.store.dir}: {len(written)} change(s)")
            for change in written:
                tr.write_line(f"  {change.family}: {change.line()}")
            rests = Counter(c.runs for c in run.baseline_changes if c.action != "refused")
            if rests:  # between-run noise is estimated from 2 runs on; 1 run: thresholds.yaml's default
                tr.write_line("baseline values rest on: " + ", ".join(
                    f"{rests[k]} metric(s) on {k} run{'s' if k > 1 else ''}" for k in sorted(rests)))
            for line in refusal_lines(run.baseline_changes):
                tr.write_line(line)
        budget = run.time_budget or {}
        took = f"the run took {duration_text(run.duration_s)}"
        if budget.get("budget_min"):
            skipped = len(budget.get("skipped") or [])
            took += (f" (time budget {budget['budget_min']:g} min, counted from the first check: "
                     f"{duration_text(budget['elapsed_s'])} of it used"
                     + (f"; {skipped} check(s) skipped for it" if skipped else "")
                     + ("; the check in flight was interrupted" if budget.get("interrupted_at_s") else "") + ")")
        tr.write_line(took)
        if self.write_error is None:
            tr.write_line(f"report card: {run.options.report_dir / 'report.html'}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.progress.close_log()
        release_report_dir(self.report_dir_lock)
        self.report_dir_lock = None
        if self.verdict_line is not None:  # after pytest's own summary: the line a person reads
            sys.stdout.write(redaction.redact(self.verdict_line) + "\n")
            sys.stdout.flush()
        if self.write_error is not None:  # last, so it is the line a person (or CI) reads
            sys.stderr.write(f"ERROR: gpucert: {self.write_error}\n")
            sys.stderr.flush()


class _RedactingWriter:
    """The terminal reporter's section and line writers, with every line redacted (notes quote
    endpoints and engine messages)."""

    def __init__(self, reporter):
        self._reporter = reporter

    def section(self, title: str, **kwargs) -> None:
        self._reporter.section(redaction.redact(title), **kwargs)

    def write_line(self, text: str, **kwargs) -> None:
        self._reporter.write_line(redaction.redact(text), **kwargs)
