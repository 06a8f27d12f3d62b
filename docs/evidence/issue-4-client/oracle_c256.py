"""The c=256 oracle's figures, the self-test's setup (tests/selftest/test_serving_oracle.py): the
emulator in its own process keeps what it really did per request (--record-timings, keyed by the
load generator's X-Request-Id), so each measured TTFT splits into server queueing (sent → handler
start), the emulator's own lateness, the configured TTFT, and the client's error (its arrival
timestamp − the server's write time). Run from the repo root:
    python docs/evidence/issue-4-client/oracle_c256.py [--hog]
--hog adds a process that keeps half a core busy (5 ms on, 5 ms off): a noisy neighbour."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "selftest"))
from test_serving_oracle import (ITL_MS, RAMP_S, ROUNDS, TTFT_MS, EmulatorConfig,  # noqa: E402
                                 run_beside, server_view, summarize)

HOG = "import time\nwhile True:\n    t = time.perf_counter()\n    while time.perf_counter() - t < 0.005: pass\n    time.sleep(0.005)"


def pct(values) -> str:
    return " / ".join(f"{v:6.2f}" for v in np.percentile(np.asarray(values) * 1e3, [50, 90, 99]))


def one(name: str, k: int, ramp: float, n: int) -> None:
    records, timings = run_beside(EmulatorConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS, tokens_per_chunk=k),
                                  concurrency=256, num_requests=n, warmup_requests=256, ramp_up_s=ramp,
                                  return_token_ids=True)
    view = server_view(records, timings, k)  # the self-test's own split of each TTFT
    ttft = summarize(records).ttft_ms["p50"]
    print(f"{name:<14}{k:>3}{ttft:>10.2f}  {pct(view['queued']):<24}{pct(view['late']):<24}"
          f"{pct(view['client_first']):<24}{pct(view['client_every'])}")


def main() -> None:
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if "--hog" in sys.argv else None
    try:
        time.sleep(0.2)
        print(f"TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, 16 tokens, 256 streams; ms as p50 / p90 / p99"
              + (" — with a half-core hog" if hog else ""))
        print(f"{'run':<14}{'k':>3}{'TTFT p50':>10}  {'queued at server':<24}{'emulator late':<24}"
              f"{'client err, 1st token':<24}{'client err, every chunk'}")
        for k in (1, 4):
            one(f"ramp {RAMP_S:g} s", k, RAMP_S, ROUNDS * 256)
        one("burst", 1, 0.0, 256)
    finally:
        if hog:
            hog.kill()


if __name__ == "__main__":
    main()
