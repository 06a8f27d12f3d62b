"""`make study` end to end on the CPU: the study checks drive an engine gpucert starts per point
(through --engine-cmd, the lifecycle vLLM gets), restart it only when a point's settings change,
and put their sections on the card. The engine is the emulator: here what matters is that each
point's settings reach its own engine and what the study concludes from what the engine did."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpucert.report import charts
from gpucert.studies import analysis
from gpucert.studies.plan import PlanError, load_plan

REPO = Path(__file__).resolve().parents[2]


def pytest_study(tmp_path, plan: dict, engine_cmd: list[str], *args):
    studies = tmp_path / "studies.yaml"
    studies.write_text(yaml.safe_dump(plan))
    cmd = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "tests/studies", "-m", "study",
           "-p", "no:cacheprovider", "-q", f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}",
           f"--studies-file={studies}", "--engine-cmd", json.dumps(engine_cmd), *args]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    path = tmp_path / "r" / "metrics.json"
    return run, (json.loads(path.read_text()) if path.exists() else None)


def test_each_batching_point_gets_its_own_engine_and_the_card_its_front(tmp_path):
    seen = tmp_path / "engines.txt"
    # the emulator, told its point's max_num_seqs through the {max_num_seqs} placeholder; it notes
    # which setting each engine start got
    stand_in = ("import sys\n"
                f"open({str(seen)!r}, 'a').write(sys.argv[2] + '\\n')\n"
                "from gpucert.serving.emulator import EmulatorConfig, serve\n"
                "serve(EmulatorConfig(ttft_ms=2, itl_ms=1), port=int(sys.argv[1]))\n")
    plan = {"batching": {"grid": {"max_num_seqs": [2, 4]}, "variants": [{"async_scheduling": False}],
                         "concurrency": [1, 2]}}
    run, metrics = pytest_study(tmp_path, plan, [sys.executable, "-c", stand_in, "{port}", "{max_num_seqs}"],
                                "--load-opt", "input_len=4", "--load-opt", "output_len=4",
                                "--load-opt", "min_requests=4", "--load-opt", "warmup=0")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    # three points, each with two levels: one engine start per point, in point order
    assert seen.read_text().split() == ["2", "4", "2"]
    ids = [c["check_id"] for c in metrics["checks"]]
    assert ids == [f"batching[batching_point={p},concurrency={c}]" for p in ("seqs2", "seqs4", "seqs2-asyncoff")
                   for c in (1, 2)], ids
    assert all(c["outcome"] == "passed" for c in metrics["checks"])
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Study: batching" in html and "best under the SLOs" in html and "Pareto front" in html


def test_a_point_whose_engine_does_not_start_fails_with_the_reason_and_the_next_runs(tmp_path):
    # the max_num_seqs=4 engine exits at start with vLLM's out-of-memory message
    stand_in = ("import sys\n"
                "if sys.argv[2] == '4':\n"
                "    print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB', flush=True)\n"
                "    sys.exit(1)\n"
                "from gpucert.serving.emulator import EmulatorConfig, serve\n"
                "serve(EmulatorConfig(ttft_ms=2, itl_ms=1), port=int(sys.argv[1]))\n")
    plan = {"batching": {"grid": {"max_num_seqs": [4, 2]}, "concurrency": [1, 2]}}
    run, metrics = pytest_study(tmp_path, plan, [sys.executable, "-c", stand_in, "{port}", "{max_num_seqs}"],
                                "--load-opt", "input_len=4", "--load-opt", "output_len=4",
                                "--load-opt", "min_requests=2", "--load-opt", "warmup=0")
    assert run.returncode == 1, run.stdout[-3000:]
    checks = {c["check_id"]: c for c in metrics["checks"]}
    for level in (1, 2):  # both levels of the point fail, the second without another start
        failed = checks[f"batching[batching_point=seqs4,concurrency={level}]"]
        assert failed["outcome"] == "failed" and "did not start (out of memory)" in failed["message"]
        assert checks[f"batching[batching_point=seqs2,concurrency={level}]"]["outcome"] == "passed"
    starts = sorted(p.name for p in (tmp_path / "r" / "engine").iterdir())
    assert starts == ["01-seqs4", "02-seqs2"], starts


@pytest.mark.fault("bad input", "a studies file with an unknown engine option",
                   "one line 'ERROR: gpucert: …: unknown engine option(s) max_num_seq', exit 4")
def test_a_bad_studies_file_is_one_line(tmp_path):
    run, _ = pytest_study(tmp_path, {"batching": {"grid": {"max_num_seq": [2]}}}, ["true"])
    assert run.returncode == 4
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert lines == [f"ERROR: gpucert: {tmp_path / 'studies.yaml'}: batching.grid: unknown engine option(s) max_num_seq"], lines
    assert "Traceback" not in run.stdout + run.stderr


def test_plan_points_and_ids():
    plan = load_plan()
    assert plan.kv_capacity.points[0].id == "default" and plan.kv_capacity.input_len == 1024
    assert len(plan.batching.points) == 8 + 3  # the 2×2×2 grid, then three variants of its first point
    with pytest.raises(PlanError, match="kv_capacity.context.input_len: expected an integer ≥ 1"):
        from gpucert.studies.plan import _kv_capacity
        _kv_capacity({"context": {"input_len": 0}})


def test_the_onset_the_capacity_predicts():
    # 4,096 blocks of 16 tokens, one the null block; a request of 1,024 + 512 tokens holds
    # ceil(1,535 / 16) = 96 blocks at its longest: 4,095 // 96 = 42 fit, the 43rd preempts
    assert analysis.blocks_per_request(1024, 512, 16) == 96
    assert analysis.predicted_full_concurrency(4096, 16, 1024, 512) == 42


def test_knee_and_pareto_front():
    assert analysis.knee([1, 2, 4, 8, 16], [10, 10.5, 11, 16, 30], 1.5) == 8
    assert analysis.knee([1, 2, 4], [10, 11, 12], 1.5) is None
    points = [(100, 5), (200, 8), (150, 9), (200, 7), (50, 4)]
    assert analysis.pareto_front(points) == [4, 0, 3]  # (150, 9) and (200, 8) are beaten by (200, 7)
    svg = charts.scatter_chart("t", "x", "y", [(5, 100, "<a>"), (7, 200, "b")], front=[(5, 100), (7, 200)], best=(7, 200))
    assert "&lt;a&gt;" in svg and "<a>" not in svg
