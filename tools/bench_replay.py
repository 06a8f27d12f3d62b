"""How punctually gpucert's load generator replays a bursty trace: the schedule lag (each request's
send stamp − its place in the trace) on this machine, against the emulator.

    python tools/bench_replay.py [--requests 600] [--seconds 60] [--burstiness 0.25] [--input-len 64] [--json]

Writes a synthetic trace (workloads.synthetic_trace's shape: gamma inter-arrivals of the given
shape, Mooncake's JSONL), starts `gpucert emulator` (2 ms TTFT, 4 tokens 1 ms apart), replays the
trace at its timestamps in one client process, and prints the lag's p50/p99/max and the event
loop's own oversleep (the lag probe). Not a test: a figure to report
(docs/evidence/issue-20-workloads/README.md); issue 20's reach is p99 ≤ 5 ms for a 5-minute
bursty replay on the H200 node.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from gpucert.serving import workloads
from gpucert.serving.loadgen import LoadConfig, run_load
from gpucert.serving.summary import client_check
from gpucert.serving.vllm_server import free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--burstiness", type=float, default=0.25)
    parser.add_argument("--input-len", type=int, default=64,
                        help="prompt tokens per request (the workloads plan's trace: 1024)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = workloads.synthetic_trace(args.seconds, args.requests / args.seconds, args.burstiness, input_len=args.input_len,
                                     output_len=4, documents=4, shared_blocks=2, block_size=16, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = workloads.write_trace(rows, Path(tmp) / "trace.jsonl")
        prompts = list(workloads.trace(path, vocab_size=151936, block_size=16))
        port = free_port("127.0.0.1")
        emulator = subprocess.Popen([sys.executable, "-m", "gpucert.cli", "emulator", "--port", str(port),
                                     "--ttft-ms", "2", "--itl-ms", "1"], stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            config = LoadConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", replay=True,
                                num_requests=len(prompts), return_token_ids=True)
            run = run_load(config, prompts)
        finally:
            emulator.terminate()
            emulator.wait()
    client = client_check(run)
    result = {"requests": len(prompts), "seconds": args.seconds, "burstiness": args.burstiness,
              "completed": sum(r.ok for r in run.measured), "schedule_lag_ms": client["send_delay_ms"],
              "loop_lag_ms": client["loop_lag_ms"], "client_cpu_fraction": client["cpu_fraction"],
              # why the others failed (a lag figure over fewer requests than the trace's must say so)
              "errors": dict(Counter((r.error or "")[:120] for r in run.measured if not r.ok).most_common(5))}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        lag, loop = result["schedule_lag_ms"], result["loop_lag_ms"]
        print(f"{result['completed']}/{len(prompts)} requests over {args.seconds:g} s (gamma shape {args.burstiness:g}): "
              f"schedule lag p50 {lag['p50']:.3f} ms, p99 {lag['p99']:.3f} ms, max {lag['max']:.3f} ms; "
              f"event-loop oversleep p99 {loop['p99']:.3f} ms")
        for error, count in result["errors"].items():
            print(f"  failed: {count} × {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
