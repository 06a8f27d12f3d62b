"""`gpucert bench nccl` with gloo: its table and rows say how they were timed, and on the CPU that
is the host's clock, never CUDA events (real gloo ranks, one process each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench_nccl(*args):
    return subprocess.run([sys.executable, "-m", "gpucert.cli", "bench", "nccl", "--backend", "gloo", "--nproc", "2",
                           "--ops", "all_reduce,all_gather", "--max-bytes", "4K", "--iters", "3", "--warmup", "1",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ))


@pytest.mark.slow("gloo ranks")
def test_the_gloo_table_says_host_wall_clock_not_cuda_events():
    run = bench_nccl()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "CUDA" not in run.stdout, run.stdout
    headers = [line for line in run.stdout.splitlines() if line.startswith(("# all_reduce", "# all_gather"))]
    how = "host wall clock (perf_counter) around each blocking call"
    assert len(headers) == 2 and all(how in h for h in headers), run.stdout


@pytest.mark.slow("gloo ranks")
def test_the_gloo_rows_say_host_wall_clock_not_cuda_events():
    run = bench_nccl("--json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    rows = json.loads(run.stdout)["rows"]
    assert rows and all("host wall clock" in r["note"] and "CUDA" not in r["note"] for r in rows), \
        [r["note"] for r in rows]
