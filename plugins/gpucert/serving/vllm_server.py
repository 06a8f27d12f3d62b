"""vLLM server lifecycle (`VllmServer`) and the `--endpoint URL` mode (`Endpoint`).

VllmServer starts `vllm serve` as a subprocess in its own process group (vLLM forks an EngineCore
and one worker per GPU; signalling the group reaches them all), logs stdout+stderr to a file,
waits on GET /health while watching the process, watches for a crash at any moment, and stops
with SIGTERM to the group, then SIGKILL. GPU memory is released by the driver when the processes
holding it are gone, which is why stop() waits until no process of the group is left.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucert import process_group, redaction
from gpucert.serving import presets
from gpucert.serving.vllm_config import EngineConfig, serving_defaults

LOG_NAME = "vllm-serve.log"


logger = logging.getLogger(__name__)  # into the run's gpucert.log (plugin.py)
_SECRET_FLAG = re.compile(r"(api[-_]?key|[-_]token$|secret|password)", re.IGNORECASE)


def redacted_argv(argv: list[str]) -> list[str]:
    """The command for a log line or a file, with the value of any key/token/secret flag
    (extra_args may carry `--api-key …`) replaced: secrets never reach logs or reports."""
    out, hide = [], False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        flag, sep, _ = arg.partition("=")
        if flag.startswith("--") and _SECRET_FLAG.search(flag):
            out.append(f"{flag}=***" if sep else arg)
            hide = not sep
        else:
            out.append(arg)
    return out


def redacted(argv: list[str]) -> str:
    return " ".join(redacted_argv(argv))


def secret_values(argv: list[str], env: dict[str, str]) -> list[str]:
    """The values `redacted_argv` hides, and those of secret-named environment variables
    (HF_TOKEN, VLLM_API_KEY …): registered so that the engine's log echoing one is redacted too."""
    values = [new for old, new in zip(redacted_argv(argv), argv) if old != new]
    values = [value.partition("=")[2] if value.startswith("--") else value for value in values]
    return values + [value for name, value in env.items() if redaction.SECRET_NAME.search(name)]


def api_key_to_env(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """`--api-key KEY` out of the engine's command line into VLLM_API_KEY, which vLLM reads the
    same way: a command line is readable by every user of the node (ps, /proc/PID/cmdline) and
    vLLM logs its non-default arguments into the engine log the card links. Several keys (vLLM
    takes a list) stay where they are: one variable holds one."""
    flags = [i for i, arg in enumerate(argv) if arg == "--api-key" or arg.startswith("--api-key=")]
    if len(flags) != 1:
        return list(argv), {}
    i = flags[0]
    if "=" in argv[i]:
        return argv[:i] + argv[i + 1:], {"VLLM_API_KEY": argv[i].partition("=")[2]}
    if i + 1 >= len(argv) or (i + 2 < len(argv) and not argv[i + 2].startswith("-")):
        return list(argv), {}  # no value, or several keys after the flag
    return argv[:i] + argv[i + 2:], {"VLLM_API_KEY": argv[i + 1]}


class EngineStartError(RuntimeError):
    """The engine did not become healthy: exited during startup or timed out. Carries the log."""

    def __init__(self, message: str, log_path: Path, log_tail: str):
        super().__init__(f"{message}\nlog: {log_path}\n--- last log lines ---\n{log_tail}")
        self.log_path = log_path
        self.log_tail = log_tail


@dataclass(frozen=True)
class Crash:
    reason: str
    at: float  # wall clock (time.time()) when noticed
    returncode: int | None
    log_path: Path


@dataclass(frozen=True)
class StopResult:
    signal: str  # "SIGTERM" (exited within the grace period), "SIGKILL", or "none" (already gone)
    returncode: int | None
    seconds: float
    group_gone: bool


def gpu_memory_used_mib(nvml_module: str = "pynvml") -> list[float] | None:
    """Memory used per GPU, read by the monitor's NVML source; None where NVML or the field is
    not there."""
    from gpucert.monitor.sources import NvmlSource
    source = NvmlSource(nvml_module)
    if not source.open():
        return None
    try:
        row: dict = {}
        source.read(row)
    finally:
        source.close()
    used = [row[f"gpu{gpu['index']}.mem_used_mib"] for gpu in source.gpus]
    return None if any(math.isnan(value) for value in used) else used


def memory_released(before: list[float] | None, nvml_module: str = "pynvml", timeout_s: float = 30.0,
                    slack_mib: float = 512.0) -> str:
    """After a stop: wait until every GPU uses no more than before the engine started (+ slack),
    and say how it ended, in one line for the card."""
    if before is None:
        return "GPU memory not checked (no NVML)"
    deadline = time.monotonic() + timeout_s
    while True:
        after = gpu_memory_used_mib(nvml_module)
        if after is None:
            return "GPU memory not checked (NVML went away)"
        held = [a - b for a, b in zip(after, before)]
        if all(h <= slack_mib for h in held) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    text = ", ".join(f"GPU{i} {a:,.0f} MiB" for i, a in enumerate(after))
    if all(h <= slack_mib for h in held):
        return f"GPU memory released ({text}; before the engine: {', '.join(f'{b:,.0f}' for b in before)} MiB)"
    return f"GPU memory NOT released {timeout_s:g} s after the stop ({text}; before: {', '.join(f'{b:,.0f}' for b in before)} MiB)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def first_model(models_url: str, headers: dict[str, str], timeout: float, hint: str = "") -> str:
    """The first model the server lists at `models_url` (GET …/v1/models, the OpenAI list: vLLM
    lists the model it serves, then its LoRA adapters); `models_url` without credentials (they go
    in `headers`). A server that cannot be asked, or answers no usable list, is a ValueError of one
    line; `hint` (e.g. "; give --model NAME") ends the lines where the server did answer."""
    asked = f"GET {redaction.display_url(models_url)}"
    try:
        status, body = http_get(models_url, timeout, headers)
    except urllib.error.URLError as err:
        reason = err.reason.strerror if isinstance(err.reason, OSError) and err.reason.strerror else err.reason
        raise ValueError(redaction.redact(f"{asked} failed: {reason}")) from None
    except TimeoutError:
        raise ValueError(f"{asked} had no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as err:
        raise ValueError(redaction.redact(f"{asked} failed: {err or type(err).__name__}")) from None
    if status != 200:
        raise ValueError(f"{asked} answered HTTP {status}{hint}")
    try:
        ids = [entry["id"] for entry in json.loads(body)["data"] if isinstance(entry.get("id"), str) and entry["id"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValueError(f"{asked} did not answer an OpenAI model list{hint}") from None
    if not ids:
        raise ValueError(f"{asked} lists no model{hint}")
    return ids[0]


def health_probe(base: str, timeout: float) -> str:
    """One GET /health: "ok" (200); "unhealthy" (another status — vLLM answers 503 once its engine
    core is dead — or the connection refused or reset: nothing listens any more); "silent" (no
    answer within `timeout`: busy or hung — under thousands of streams vLLM's API-server loop
    answers /health seconds late, which is not a crash)."""
    try:
        status, _ = http_get(f"{base}/health", timeout)
    except TimeoutError:
        return "silent"
    except urllib.error.URLError as err:
        return "silent" if isinstance(err.reason, TimeoutError) else "unhealthy"
    except OSError:
        return "unhealthy"
    return "ok" if status == 200 else "unhealthy"


def health_ok(base: str, timeout: float) -> bool:
    return health_probe(base, timeout) == "ok"


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


class VllmServer:
    """Context manager: `with VllmServer(cfg, report_dir) as server: server.base_url …`.

    `command` replaces the vLLM argv (the self-tests run a stand-in HTTP server through the same
    lifecycle); lifecycle timings default to serving.yaml's `lifecycle` section."""

    def __init__(self, config: EngineConfig, workdir: str | Path, *, command: list[str] | None = None,
                 startup_timeout_s: float | None = None, health_poll_s: float | None = None,
                 health_failures: int | None = None, watch_interval_s: float | None = None,
                 stop_timeout_s: float | None = None, health_timeout_s: float | None = None,
                 health_silence_s: float | None = None):
        life = serving_defaults()["lifecycle"]
        self.workdir = Path(workdir)
        self.port = config.port or free_port(config.host)
        self.config = config.with_overrides({"port": self.port})
        self.command = command
        self.startup_timeout_s = startup_timeout_s if startup_timeout_s is not None else life["startup_timeout_s"]
        self.health_poll_s = health_poll_s if health_poll_s is not None else life["health_poll_s"]
        self.health_failures = health_failures if health_failures is not None else life["health_failures"]
        self.watch_interval_s = watch_interval_s if watch_interval_s is not None else life["watch_interval_s"]
        self.stop_timeout_s = stop_timeout_s if stop_timeout_s is not None else life["stop_timeout_s"]
        self.health_timeout_s = health_timeout_s if health_timeout_s is not None else life["health_timeout_s"]
        self.health_silence_s = health_silence_s if health_silence_s is not None else life["health_silence_s"]
        self.log_path = self.workdir / LOG_NAME
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.crash: Crash | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._sigterm_before: Any = None  # the handler replaced while the engine runs

    # ---- identity ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Root URL (no /v1): vLLM serves /health at the root and the OpenAI API under /v1."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def model_name(self) -> str:
        """The name clients send: the preset name for presets (not the materialized path)."""
        if self.config.served_model_name:
            return self.config.served_model_name
        return self.config.model

    def argv(self) -> list[str]:
        if self.command is not None:  # under the configured launcher too (nsys profile …)
            return list(self.config.launcher) + list(self.command)
        cfg = self.config
        if presets.is_preset(cfg.model):
            folder = presets.materialize(cfg.model, self.workdir / "models")
            if not cfg.served_model_name:
                cfg = cfg.with_overrides({"served_model_name": cfg.model})
            return cfg.argv(model_path=str(folder))
        return cfg.argv()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> VllmServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv, key_env = api_key_to_env(self.argv())
        for value in secret_values(argv, {**self.config.env, **key_env}):
            redaction.register(value)
        (self.workdir / "vllm-serve.argv.json").write_text(json.dumps(redacted_argv(argv), indent=1) + "\n")
        env = {**os.environ, **self.config.env, **key_env}
        with open(self.log_path, "wb") as log:
            # own session = own process group: stop() signals vLLM's EngineCore and workers too
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.started_at = time.time()
        logger.info("engine started (pid %d): %s; log %s", self.proc.pid, redacted(argv), self.log_path)
        self._stop_on_sigterm()
        try:
            self._wait_healthy()
        except BaseException as exc:
            logger.error("engine did not become healthy: %s", exc)
            self.stop()
            raise
        self.ready_at = time.time()
        logger.info("engine healthy after %.0f s at %s", self.ready_at - self.started_at, self.base_url)
        self._watcher = threading.Thread(target=self._watch, name="vllm-watcher", daemon=True)
        self._watcher.start()
        return self

    def _stop_on_sigterm(self) -> None:
        """While the engine runs, SIGTERM (a CI job's time limit, `timeout`, systemd) is taken as
        Ctrl-C (KeyboardInterrupt) instead of ending this process on the spot: `with` blocks stop
        the engine, and pytest ends the session as after Ctrl-C — checks cut short marked
        incomplete, the card written, fixtures torn down. The engine runs in a process group of its
        own and would otherwise outlive us holding the GPUs (seen: a script killed by `timeout` left
        vLLM on 78 GB of each GPU). Only from the main thread, where nobody set a handler before."""
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._sigterm_before = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._sigterm_before is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _interrupt_on_sigterm:
                signal.signal(signal.SIGTERM, self._sigterm_before)
            self._sigterm_before = None

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            returncode = self.proc.poll()
            if returncode is not None:
                raise EngineStartError(f"engine exited during startup with code {returncode}",
                                       self.log_path, self.log_tail())
            if health_ok(self.base_url, timeout=max(self.health_poll_s, 1.0)):
                return
            if time.monotonic() > deadline:
                raise EngineStartError(f"engine not healthy after {self.startup_timeout_s:g} s",
                                       self.log_path, self.log_tail())
            time.sleep(self.health_poll_s)

    def _watch(self) -> None:
        """A crash is the process exiting, /health answering other than 200 `health_failures`
        times in a row, or /health not answering at all for `health_silence_s` (a hang). A slow
        answer alone is load, not a crash (seen: vLLM at 2,048 streams, 1 API server)."""
        failures, last_answer = 0, time.monotonic()
        while not self._stopping.wait(self.watch_interval_s):
            returncode = self.proc.poll()
            if returncode is not None:
                self._record_crash(f"engine process exited with code {returncode}", returncode)
                return
            state = health_probe(self.base_url, timeout=self.health_timeout_s)
            now = time.monotonic()
            if state == "silent":
                if now - last_answer >= self.health_silence_s:
                    self._record_crash(f"/health gave no answer for {now - last_answer:.0f} s (hung)",
                                       self.proc.poll())
                    return
                continue
            last_answer = now
            if state == "ok":
                failures = 0
                continue
            failures += 1
            if failures >= self.health_failures:
                self._record_crash(f"/health failed {failures} times in a row", self.proc.poll())
                return

    def _record_crash(self, reason: str, returncode: int | None) -> None:
        if self.crash is None and not self._stopping.is_set():
            self.crash = Crash(reason=reason, at=time.time(), returncode=returncode, log_path=self.log_path)

    def alive(self) -> bool:
        """Running and not declared crashed. Checks the process now, not only at the watcher's tick."""
        if self.proc is None or self.crash is not None:
            return False
        returncode = self.proc.poll()
        if returncode is not None:
            self._record_crash(f"engine process exited with code {returncode}", returncode)
            return False
        return True

    def stop(self) -> StopResult:
        """SIGTERM the group, wait stop_timeout_s, then SIGKILL; return once the group is gone."""
        self._stopping.set()
        t0 = time.monotonic()
        if self.proc is None:
            return StopResult("none", None, 0.0, True)
        sent = process_group.stop_groups([self.proc], self.stop_timeout_s)
        returncode = self.proc.poll()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=self.watch_interval_s + self.health_timeout_s + 5)
        self._restore_sigterm()
        result = StopResult(sent, returncode, time.monotonic() - t0, not process_group.group_alive(self.proc.pid))
        logger.info("engine stopped: %s", result)
        return result

    def engine_facts(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """What the engine reported at start: its /metrics first (KV blocks, block size, KV cache
        dtype …), its log for the rest (compile and graph times …), each fact's source in
        `sources` (vllm_metrics.engine_facts)."""
        from gpucert.serving import vllm_metrics
        return vllm_metrics.engine_facts(self.base_url, self.log_path, timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except FileNotFoundError:
            return ""

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- --endpoint mode -------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server gpucert did not start. The API key is read from the environment
    variable `api_key_env` at the moment of use and never stored, so it cannot leak through repr,
    logs, or the metrics JSON; every secret it reads (the key, a URL's password or credential
    query value) is registered with gpucert.redaction, so a server echoing one back is redacted
    wherever its answer is written. A URL's user:password becomes a Basic Authorization header."""

    base_url: str  # root or .../v1 (query kept); normalised to the root without trailing slash
    model: str | None = None
    api_key_env: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        redaction.register_url(self.base_url)
        parts = urllib.parse.urlsplit(self.base_url)
        root = parts.path.rstrip("/").removesuffix("/v1")
        object.__setattr__(self, "base_url", urllib.parse.urlunsplit(parts._replace(path=root, fragment="")))

    def __repr__(self) -> str:
        return (f"Endpoint(base_url={redaction.display_url(self.base_url)!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    __str__ = __repr__

    def _url(self, path: str, credentials: bool = False) -> str:
        parts = urllib.parse.urlsplit(self.base_url)
        url = urllib.parse.urlunsplit(parts._replace(path=parts.path + path))
        return url if credentials else redaction.without_credentials(url)

    @property
    def v1_url(self) -> str:
        """The API root with the URL's credentials and query: what the load generator is given
        (it turns the credentials into a header as `headers()` does)."""
        return self._url("/v1", credentials=True)

    @property
    def display_url(self) -> str:
        """The API root as configurations, notes and messages show it: no password, no key."""
        return redaction.display_url(self.v1_url)

    @property
    def keyed(self) -> bool:
        """Whether the server wants credentials (then its /metrics is not ours to read either)."""
        return bool(self.api_key_env) or redaction.display_url(self.base_url) != self.base_url

    def headers(self) -> dict[str, str]:
        """Request headers including the key; pass straight to the HTTP client, never log them."""
        if not self.api_key_env:
            basic = redaction.basic_credentials(self.base_url)
            return {"Authorization": f"Basic {basic}"} if basic else {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"API key variable {self.api_key_env} is not set")
        redaction.register(key)
        return {"Authorization": f"Bearer {key}"}

    def discover_model(self, timeout: float = 10.0) -> Endpoint:
        """Fill `model` from GET /v1/models (the first model listed) when it was not given."""
        if self.model:
            return self
        return Endpoint(self.base_url, first_model(self._url("/v1/models"), self.headers(), timeout),
                        self.api_key_env, self.extra)

    def to_dict(self) -> dict[str, Any]:
        """For results and the card: the variable's name, never its value."""
        return {"base_url": redaction.display_url(self.base_url), "model": self.model,
                "api_key_env": self.api_key_env}
