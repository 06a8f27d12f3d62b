"""What a load is put on: an OpenAI-compatible server's /v1 URL and model, the load settings, and,
where gpucert started it, the engine (its crash, what it reported at start, the configuration kept
with the baseline). Shared by the inference checks and the studies."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from gpucert.serving.settings import LoadSettings
from gpucert.serving.vllm_server import VllmServer


@dataclass
class ServingTarget:
    v1_url: str
    model: str
    load: LoadSettings
    api_key_env: str | None = None
    server: VllmServer | None = None  # None: an endpoint gpucert did not start
    facts: dict = field(default_factory=dict)  # what the engine reported: /metrics, then its log
    configuration: dict = field(default_factory=dict)  # engine and load settings (configuration.py)

    def crashed(self, grace_s: float = 0.0) -> str | None:
        """Why the engine died, with its log, or None while it lives (or is not ours). After
        failed requests, `grace_s` lets a dying engine finish exiting: its connections drop a
        moment before the process is gone."""
        if self.server is None:
            return None
        if grace_s and self.server.proc is not None:
            try:
                self.server.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        if self.server.alive():
            return None
        crash = self.server.crash
        reason = f"{crash.reason} at +{crash.at - self.server.started_at:.1f} s" if crash else "the engine exited"
        return f"{reason}; log: {self.server.log_path}"
