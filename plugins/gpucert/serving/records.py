"""What one streamed request measured. Times are `time.monotonic()` seconds: one system-wide
clock, so samples of other engines (the resource monitor) align with these records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["ok", "error"]


@dataclass
class RequestRecord:
    """One request. `token_times` holds one entry per output token: a chunk carrying k token ids
    contributes k entries with that chunk's arrival time (how ITL splits a chunk)."""

    request_id: int
    scheduled_at: float  # when the arrival process wanted it sent
    prompt_tokens: int | None = None  # from usage, else the caller's count of a token-id prompt
    sent_at: float | None = None
    first_token_at: float | None = None  # first streamed *content* (text or token ids)
    token_times: list[float] = field(default_factory=list)
    # entries of `token_times` the first content chunk put there: its tokens are TTFT's, not
    # gaps. Kept explicitly because two chunks that arrive in one read share a timestamp
    first_chunk_tokens: int = 0
    content_chunks: int = 0  # streamed chunks that carried text or token ids
    ended_at: float | None = None
    # what counts as served: the streamed token ids, else the server's usage where the stream
    # bears it out (METRICS.md, "Token counts"); None when neither came
    output_tokens: int | None = None
    output_tokens_source: Literal["usage", "token_ids", "chunks", "none"] = "none"
    claimed_output_tokens: int | None = None  # usage.completion_tokens as the server sent it
    # why this request's token count is not to be trusted (usage against the stream, or against
    # what it asked for); None when it is
    token_count_mismatch: str | None = None
    requested_output_tokens: int | None = None  # the request's max_tokens
    status: Status = "error"
    http_status: int | None = None
    error: str | None = None
    warmup: bool = False
    # sent as the X-Request-Id header: vLLM names the request after it (cmpl-<id>-0) in its logs
    # and traces, and the emulator keys its own send times by it, so both sides can be matched
    x_request_id: str | None = None
    # a multi-turn conversation's request: which conversation, which turn (0-based)
    conversation: int | None = None
    turn: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def send_delay(self) -> float | None:
        """Scheduled vs actual send: how late the client was (its own lag, not the server's)."""
        return None if self.sent_at is None else self.sent_at - self.scheduled_at

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RequestRecord:
        return cls(**data)


@dataclass
class RunRecords:
    """All records of one load-generator run plus the clocks needed to align them."""

    records: list[RequestRecord]
    started_monotonic: float
    started_wall: float  # time.time() at the same instant, for wall-clock alignment
    loop_lag_s: list[float] = field(default_factory=list)  # event-loop oversleep samples
    cpu_fraction: float | None = None  # client process CPU time / wall time
    deadline_s: float | None = None  # the run's deadline (loadgen.default_deadline_s unless given)
    deadline_passed: bool = False  # it ended the run: requests in flight or unsent then failed

    @property
    def measured(self) -> list[RequestRecord]:
        """The records the summary counts: everything except warm-up requests."""
        return [r for r in self.records if not r.warmup]
