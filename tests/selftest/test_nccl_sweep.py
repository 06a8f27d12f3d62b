"""The NCCL sweep for real: gloo in 2 (and 3) CPU processes, as `gpucert bench nccl` and as the
hardware check runs it, with a rank that corrupts its data, one that hangs and one that dies."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpucert import cli
from gpucert.physics import nccl
from gpucert.physics.nccl import faults, formulas
from .machine import without_gpu

REPO = Path(__file__).resolve().parents[2]
QUICK = {"warmup": 1, "iters": 3}


def gpucert_cmd(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gpucert.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow("gloo ranks")
def test_cli_json_sweeps_every_op_and_size_with_right_data():
    run = gpucert_cmd("bench", "nccl", "--backend", "gloo", "--nproc", "2", "--max-bytes", "1M",
                      "--iters", "3", "--warmup", "1", "--json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    out = json.loads(run.stdout)
    assert (out["backend"], out["nproc"], out["dtype"], out["status"]) == ("gloo", 2, "float32", "ok")
    sizes = formulas.size_list(8, 1 << 20, 2)
    assert [(r["op"], r["bytes"]) for r in out["rows"]] == [(op, s) for op in formulas.OPS for s in sizes]
    for row in out["rows"]:
        assert {"op", "bytes", "time_us", "min_time_us", "count", "dtype", "algbw_gbps", "busbw_gbps",
                "wrong", "status", "error"} <= set(row)
        assert (row["status"], row["wrong"], row["error"]) == ("ok", 0, None), row
        assert row["algbw_gbps"] == pytest.approx(row["bytes"] / (row["time_us"] * 1e-6) / 1e9)
        assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * formulas.bus_factor(row["op"], 2))
        assert 0 < row["min_time_us"] <= max(row["samples_us"]) and row["iters"] == 3
        per_rank = row["bytes"] // 4 // 2 if row["op"] in formulas.SPLIT_OPS else row["bytes"] // 4
        assert row["count"] == per_rank
    notes = {r["op"]: r["note"] for r in out["rows"]}
    assert "in place" in notes["all_reduce"] and "all_to_all_single" in notes["alltoall"]


@pytest.mark.slow("gloo ranks")
def test_three_ranks_round_sizes_and_check_every_collective():
    # an odd rank count: alltoall/sendrecv ring offsets and nccl-tests' rounding are exercised
    result = nccl.run(nccl.SweepConfig(backend="gloo", nproc=3, sizes=(8, 100, 4096), **QUICK))
    assert result.ok, [r["error"] for r in result.rows if r["error"]]
    by_op = {}
    for row in result.rows:
        by_op.setdefault(row["op"], []).append(row["bytes"])
    assert by_op["all_gather"] == [96, 4092]  # 8 B: 2 elements do not split over 3 ranks
    assert by_op["all_reduce"] == [8, 100, 4096]
    assert all(r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * formulas.bus_factor(r["op"], 3))
               for r in result.rows)


@pytest.mark.slow("gloo ranks")
def test_a_hung_rank_is_killed_at_the_stall_timeout(monkeypatch):
    monkeypatch.setenv(faults.ENV, "hang:rank=1:op=all_gather")
    result = nccl.run(nccl.SweepConfig(backend="gloo", nproc=2, ops=("all_reduce", "all_gather", "reduce"),
                                       sizes=(8, 1024), stall_timeout_s=2, **QUICK))
    assert result.status == "timeout" and "no progress for 2 s in all_gather at 8 B" in result.error
    status = [(r["op"], r["bytes"], r["status"]) for r in result.rows]
    assert status == [("all_reduce", 8, "ok"), ("all_reduce", 1024, "ok"), ("all_gather", 8, "timeout"),
                      ("all_gather", 1024, "timeout"), ("reduce", 8, "timeout"), ("reduce", 1024, "timeout")]
    assert result.rows[0]["wrong"] == 0 and result.rows[0]["time_us"] > 0  # finished rows stay
    assert result.rows[2]["error"].startswith("timeout: no progress for 2 s")
    assert result.rows[3]["error"] == "timeout: not run, the sweep stopped at all_gather at 8 B"
    assert result.wall_s < 30
    assert not any(alive(rank["pid"]) for rank in result.ranks)


@pytest.mark.slow("gloo ranks")
def test_a_crashed_rank_stops_the_others_with_its_error(monkeypatch):
    monkeypatch.setenv(faults.ENV, "crash:rank=1:op=reduce")
    result = nccl.run(nccl.SweepConfig(backend="gloo", nproc=2, ops=("all_reduce", "reduce"), sizes=(8,), **QUICK))
    assert result.status == "error"
    assert result.rows[0]["status"] == "ok"
    assert result.rows[1]["status"] == "error"
    # the raise exits with status 1, or c10d's teardown aborts the process (signal 6) on the way out
    assert re.match(r"error: rank 1 failed \((status 1|signal 6)\) in reduce at 8 B: "
                    r"RuntimeError: injected crash on rank 1", result.rows[1]["error"]), result.rows[1]["error"]
    assert not any(alive(rank["pid"]) for rank in result.ranks)


@pytest.mark.slow("gloo ranks")
def test_corrupted_data_fails_the_hardware_check_on_wrong(tmp_path):
    env = {**os.environ, faults.ENV: "corrupt:rank=1:op=all_reduce"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/hardware/test_nccl.py", "-m", "hardware", "-p", "no:cacheprovider",
         "--nccl-backend=gloo", "--nccl-max-bytes=2K",
         f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    failed = sorted(line.split(" ")[1] for line in run.stdout.splitlines() if line.startswith("FAILED "))
    assert failed == sorted(
        [f"tests/hardware/test_nccl.py::test_nccl[all_reduce-{s}]" for s in ("8B", "32B", "128B", "512B", "2KiB")]
        + ["tests/hardware/test_nccl.py::test_nccl_large_message_busbw",
           "tests/hardware/test_nccl.py::test_nccl_small_message_latency"])
    assert "nccl[op=all_reduce,size=2KiB]::wrong: FAIL: measurement failed: data check: 3 wrong element(s) " \
           "(rank 1: 3)" in run.stdout
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    wrong = {c["params"]["op"]: m["value"] for c in metrics["checks"] if c["check"] == "nccl"
             for m in c["metrics"] if m["metric"] == "wrong" and c["params"]["size"] == "2KiB"}
    assert wrong == {"all_reduce": 3, "all_gather": 0, "reduce_scatter": 0, "alltoall": 0,
                     "broadcast": 0, "reduce": 0, "sendrecv": 0}


@without_gpu
def test_the_hardware_check_skips_without_a_gpu(tmp_path):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/hardware/test_nccl.py", "-p", "no:cacheprovider", "-rs",
         f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    checks = len(formulas.OPS) * len(formulas.HARDWARE_SIZES) + 2  # + latency and peak headlines
    assert f"{checks} skipped" in run.stdout and "no CUDA device" in run.stdout


@pytest.mark.parametrize("args,message", [
    (["--ops", "all_reduce,allreduce"], "unknown op 'allreduce' (valid: all_reduce, all_gather"),
    (["--nproc", "1"], "nproc must be >= 2"),
    (["--max-bytes", "8X"], "bad size '8X'"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, message):
    assert cli.main(["bench", "nccl", "--backend", "gloo", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpucert: error: ") and message in err


def test_nccl_without_enough_gpus_is_one_line_exit_2(capsys):
    torch = pytest.importorskip("torch")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = max(found + 1, 2)  # with no --nproc, nccl asks for every GPU, and at least 2
    args = ["--nproc", str(wanted)] if found >= 2 else []
    assert cli.main(["bench", "nccl", "--backend", "nccl", *args]) == 2
    assert capsys.readouterr().err == f"gpucert: error: --backend nccl needs {wanted} CUDA devices, found {found}\n"


@pytest.mark.fault("bad input", "pytest -m hardware --nccl-nproc 1, and --nccl-max-bytes lots",
                   "one line `ERROR: gpucert: …` naming the option, exit 4, before anything runs")
@pytest.mark.parametrize("option, message", [
    ("--nccl-nproc=1", "gpucert: --nccl-nproc must be at least 2, got 1"),
    ("--nccl-max-bytes=lots", "gpucert: --nccl-max-bytes: bad size 'lots'"),
])
def test_bad_nccl_options_are_one_line(tmp_path, option, message):
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/hardware/test_nccl.py", "-p", "no:cacheprovider",
                          option, f"--report-dir={tmp_path / 'r'}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 4 and "Traceback" not in run.stdout + run.stderr
    assert message in run.stderr, run.stderr
