"""`gpucert bench gemm|memory` on the CPU (--json rows, tables, bad input), and the GEMM/memory
hardware checks skipping cleanly where there is no GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpucert.cli import main
from gpucert.physics import gemm, memory
from .machine import without_gpu

REPO = Path(__file__).resolve().parents[2]
GEMM_ROW = {"dtype", "shape", "m", "n", "k", "tflops", "pct_of_peak", "status", "error"}


def bench_json(capsys, *argv):
    code = main(["bench", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_gemm_json_rows_on_cpu(capsys):
    code, rows = bench_json(capsys, "gemm", "--device", "cpu", "--dtype", "fp32,bf16,fp8", "--sizes", "64,96",
                            "--reps", "2", "--warmup", "0")
    assert code == 0
    assert [(r["dtype"], r["shape"]) for r in rows] == [
        ("fp32", "square-64"), ("fp32", "square-96"), ("bf16", "square-64"), ("bf16", "square-96"),
        ("fp8", "square-64"), ("fp8", "square-96")]
    for row in rows:
        assert set(row) == GEMM_ROW
        assert row["pct_of_peak"] is None  # no datasheet peak on the CPU
    ok = [r for r in rows if r["dtype"] != "fp8"]
    assert all(r["status"] == "ok" and r["tflops"] > 0 and r["error"] is None for r in ok)
    assert rows[1]["m"] == rows[1]["n"] == rows[1]["k"] == 96
    fp8 = rows[-1]
    assert fp8["status"] == "skipped" and fp8["tflops"] is None and "compute capability >= 8.9" in fp8["error"]


def test_gemm_model_shapes_and_search_rows(capsys):
    code, rows = bench_json(capsys, "gemm", "--device", "cpu", "--dtype", "fp32", "--shapes", "all",
                            "--sizes", "32", "--tokens", "1,4", "--model", "qwen2.5-1.5b", "--tp", "2",
                            "--search-range", "32:64:32", "--reps", "2", "--warmup", "0")
    assert code == 0
    shapes = [r["shape"] for r in rows]
    assert shapes[0] == "square-32" and shapes[-1] == "search"
    assert "qwen2.5-1.5b-down-m4" in shapes and len(shapes) == 1 + 4 * 2 + 1
    down = rows[shapes.index("qwen2.5-1.5b-down-m4")]
    assert (down["m"], down["n"], down["k"]) == (4, 1536, 4480)
    search = rows[-1]
    assert search["status"] == "ok" and search["m"] in (32, 64) and search["tflops"] > 0


def test_search_ranges_per_dimension(capsys):
    code, rows = bench_json(capsys, "gemm", "--device", "cpu", "--dtype", "fp32", "--shapes", "search",
                            "--search-range", "32:64:32", "--n-range", "48:48:1", "--reps", "1", "--warmup", "0")
    assert code == 0 and len(rows) == 1
    assert rows[0]["n"] == 48 and rows[0]["m"] in (32, 64) and rows[0]["k"] in (32, 64)


def test_gemm_table_is_fixed_width_with_a_header(capsys):
    assert main(["bench", "gemm", "--device", "cpu", "--dtype", "fp32,tf32", "--sizes", "32", "--reps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# gpucert bench gemm on cpu: no datasheet peak on the CPU"
    assert lines[1].split() == ["dtype", "shape", "m", "n", "k", "TFLOP/s", "%", "peak", "status"]
    assert lines[2].split()[:5] == ["fp32", "square-32", "32", "32", "32"] and lines[2].rstrip().endswith("ok")
    assert "skipped: TF32 is a tensor-core mode" in lines[3]


@pytest.mark.parametrize("argv,message", [
    (["gemm", "--dtype", "bf17"], "unknown dtype bf17 (valid: fp8, bf16, fp16, tf32, fp32, all)"),
    (["gemm", "--device", "tpu"], "--device 'tpu': expected cuda, cuda:N or cpu"),
    (["gemm", "--device", "cpu", "--shapes", "model", "--model", "gpt-5"], "unknown model preset 'gpt-5'"),
    (["gemm", "--device", "cpu", "--shapes", "model", "--tp", "5"], "do not split evenly over TP=5"),
    (["gemm", "--device", "cpu", "--sizes", "4k"], "--sizes '4k': expected comma-separated integers"),
    (["gemm", "--device", "cpu", "--shapes", "search", "--search-range", "1:2"], "expected START:STOP:STEP"),
    (["memory", "--size", "12Q"], "--size '12Q': expected a byte count"),
    (["memory", "--kinds", "p2p"], "unknown copy kind p2p"),
])
@pytest.mark.fault('bad-input', 'bad `gpucert bench gemm/memory` arguments', 'one line on stderr, exit 2')
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucert: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("engine", ["gemm", "memory"])
@without_gpu
def test_device_cuda_without_a_gpu_says_so(capsys, engine):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["bench", engine, "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device" in capsys.readouterr().err


def test_memory_json_rows_on_cpu(capsys):
    code, rows = bench_json(capsys, "memory", "--device", "cpu", "--size", "4M", "--reps", "3")
    assert code == 0
    assert [r["kind"] for r in rows] == list(memory.KINDS)
    copy = rows[0]
    assert copy["status"] == "ok" and copy["size_bytes"] == 4 << 20 and copy["bytes"] == 8 << 20
    assert copy["gbps"] == pytest.approx(copy["bytes"] / copy["time_us"] / 1e3)
    assert copy["pct_of_peak"] is None
    assert all(r["status"] == "skipped" and "cpu is not one" in r["error"] for r in rows[1:])


def test_memory_table_on_cpu(capsys):
    assert main(["bench", "memory", "--device", "cpu", "--size", "1M", "--kinds", "device_copy", "--reps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# gpucert bench memory on cpu (cpu): no datasheet peak on the CPU"
    assert lines[2].split()[0] == "device_copy" and lines[2].rstrip().endswith("ok")


@without_gpu
def test_hardware_checks_skip_cleanly_without_a_gpu(tmp_path):
    """The operator's command on a machine without a GPU: every GEMM and memory check is skipped
    with the reason, nothing fails, and the card records them."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU even where the self-tests run on one
    cmd = [sys.executable, "-m", "pytest", "tests/hardware", "-m", "hardware", "-k", "gemm or memory", "-p", "no:cacheprovider",
           "--report-dir", str(tmp_path / "report")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = json.loads((tmp_path / "report" / "metrics.json").read_text())["checks"]
    squares = sum(len(sizes) for sizes in gemm.SQUARE_SIZES.values())
    projections = 2 * 4 * len(gemm.TOKEN_COUNTS)  # bf16 and fp8 × QKV, O, up, down × token counts
    expected = {"gemm_square": squares, "gemm_projection": projections,
                "gemm_max_achievable": len(gemm.DTYPES), "memory": len(memory.KINDS)}
    assert {name: sum(c["check"] == name for c in checks) for name in expected} == expected
    assert len(checks) == sum(expected.values())
    for check in checks:
        assert check["outcome"] == "skipped", check
        assert check["message"].startswith("no CUDA device"), check
    assert "Traceback" not in done.stdout + done.stderr
