"""One engine at a time across a study's points. A point asks for an engine configuration; the
running engine serves it when its settings are the same, else it is stopped (its GPU memory
released) and the point's engine started. An engine that cannot start — out of memory, a KV cache
too small for max_model_len, any crash — is that point's failure with the reason from its log, and
the next point starts afresh: a study survives its own OOMs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpucert.serving.configuration import measured_with
from gpucert.serving.settings import LoadSettings
from gpucert.serving.target import ServingTarget
from gpucert.serving.vllm_config import EngineConfig, engine_command
from gpucert.serving.vllm_server import EngineStartError, VllmServer, free_port

# what a start that failed was, from the engine's log (first match wins)
START_FAILURES = (
    ("out of memory", re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.IGNORECASE)),
    ("KV cache too small", re.compile(r"larger than the maximum number of tokens that can be stored in KV cache"
                                      r"|No available memory for the cache blocks|max_model_len.*KV cache", re.IGNORECASE)),
    ("unsupported setting", re.compile(r"not supported|unsupported|ValueError", re.IGNORECASE)),
)


class EngineUnavailable(RuntimeError):
    """The point's engine did not start: `kind` (out of memory, …) and the log's tail."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def start_failure_kind(log_text: str) -> str:
    return next((kind for kind, pattern in START_FAILURES if pattern.search(log_text)), "did not start")


def _key(config: EngineConfig) -> tuple:
    settings = config.to_dict()
    settings.pop("port", None)
    return tuple(sorted((k, repr(v)) for k, v in settings.items()))


class EnginePool:
    """`target(engine, load, name)` gives a ServingTarget on an engine of exactly that
    configuration; `release()` stops it (an offline run needs the GPUs); `close()` at the end.
    `command_text` is --engine-cmd (its `{port}` and `{engine option}` placeholders filled per
    engine); `attach`/`detach` connect the session's monitor to each engine's /metrics; `note`
    puts a line on the card."""

    def __init__(self, workdir: Path, *, command_text: str | None = None,
                 attach: Callable[[str], None] | None = None, detach: Callable[[], None] | None = None,
                 note: Callable[[str], None] | None = None):
        self.workdir = Path(workdir)
        self.command_text = command_text
        self.attach, self.detach, self.note = attach, detach, note
        self.server: VllmServer | None = None
        self.key: tuple | None = None
        self.facts: dict[str, Any] = {}
        self.starts = 0
        self.failed: dict[tuple, EngineUnavailable] = {}

    def target(self, engine: EngineConfig, load: LoadSettings, name: str) -> ServingTarget:
        key = _key(engine)
        if key in self.failed:  # the same settings failed to start already: not another few minutes
            raise self.failed[key]
        if self.server is not None and key == self.key and self.server.alive():
            return self._target(load)
        self.release()
        command = None
        if self.command_text:
            engine = engine.with_overrides({"port": free_port(engine.host)})
            command = engine_command(self.command_text, engine.port, engine)
        self.starts += 1
        server = VllmServer(engine, self.workdir / f"{self.starts:02d}-{name}", command=command)
        try:
            server.start()
        except EngineStartError as exc:
            kind = start_failure_kind(exc.log_tail)
            failure = EngineUnavailable(kind, f"the engine for {name} did not start ({kind}): "
                                              f"{str(exc).splitlines()[0]}; log: {exc.log_path}")
            self.failed[key] = failure
            raise failure from None
        self.server, self.key = server, key
        self.facts = server.engine_facts()
        if self.attach:
            self.attach(f"{server.base_url}/metrics")
        return self._target(load)

    def _target(self, load: LoadSettings) -> ServingTarget:
        server = self.server
        return ServingTarget(f"{server.base_url}/v1", server.model_name, load, server=server, facts=self.facts,
                             configuration=measured_with(load, server.config))

    def release(self) -> None:
        if self.server is None:
            return
        if self.detach:
            self.detach()
        stopped = self.server.stop()
        if self.note and not stopped.group_gone:
            self.note(f"study engine {self.server.workdir.name}: its process group is STILL ALIVE after stop")
        self.server, self.key, self.facts = None, None, {}

    close = release
