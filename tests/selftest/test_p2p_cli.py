"""`gpucert bench p2p` and the P2P hardware checks where there is no GPU: one-line errors with
exit 2, clean skips with their reason; and the printout itself, on a CPU sweep standing in."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpucert import snapshot
from gpucert.cli import CommandError, main
from gpucert.physics import p2p, p2p_cli, p2p_matrix

from .captures import FIXTURE
from .machine import without_gpu

REPO = Path(__file__).resolve().parents[2]


@without_gpu
def test_no_gpu_is_one_line_and_exit_2(capsys):
    assert main(["bench", "p2p"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("gpucert: error: P2P needs ≥ 2 GPUs, found 0 (no CUDA device: PyTorch "
                            f"{__import__('torch').__version__} is a CPU build)\n")


@without_gpu
def test_no_gpu_through_the_installed_command():
    run = subprocess.run([sys.executable, "-m", "gpucert.cli", "bench", "p2p", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "P2P needs ≥ 2 GPUs, found 0" in run.stderr


@pytest.mark.parametrize("args, message", [
    (["--size", "lots"], "bad size 'lots'"),
    (["--size", "0"], "must be at least 1 byte"),
    (["--reps", "0"], "--reps must be at least 1"),
])
@pytest.mark.fault('bad-input', 'bad `gpucert bench p2p` arguments', 'one line on stderr, exit 2')
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert main(["bench", "p2p", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("text, size", [("1G", 1 << 30), ("256M", 256 << 20), ("1GiB", 1 << 30),
                                        ("4096", 4096), ("1.5k", 1536), ("2 MB", 2 << 20)])
def test_sizes_are_binary_multiples(text, size):
    assert p2p_cli.parse_size(text) == size


def test_parse_size_rejects_garbage():
    with pytest.raises(CommandError):
        p2p_cli.parse_size("1Q")


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """`bench p2p` on a node of two NV18 GPUs whose copies are CPU copies: the real sweep on
    ["cpu", "cpu"], the captured H100 snapshot for links and peaks."""
    real_sweep = p2p_matrix.sweep
    monkeypatch.setattr(p2p, "available_gpus", lambda: (2, ""))
    monkeypatch.setattr(p2p, "device_uuid", lambda device: None)
    monkeypatch.setattr(p2p_matrix, "sweep", lambda devices, config, **kw: real_sweep(
        ["cpu"] * len(devices), p2p_matrix.SweepConfig(size=1 << 20, latency_copies=5, warmup=1, reps=2), **kw))
    captured = snapshot.collect(from_dir=FIXTURE)
    monkeypatch.setattr(snapshot, "collect", lambda: captured)


def test_printout_has_the_matrices_and_the_pairs(capsys, two_fake_gpus):
    assert main(["bench", "p2p", "--size", "1M"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("P2P Connectivity Matrix\n     D\\D     0     1\n")
    assert "Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)\n   D\\D     0      1 \n" in out
    pairs = (["0", "1", "NV18"], ["1", "0", "NV18"])
    pair_lines = [line.split() for line in out.splitlines() if line.split()[:3] in pairs]
    assert len(pair_lines) == 2 and pair_lines[0][4] != "—"
    assert "note: peak: NV18: 18/18 of the datasheet NVLink 450 GB/s per direction (H100 SXM5 80GB)" in out


def test_json_has_pairs_and_matrices(capsys, two_fake_gpus):
    assert main(["bench", "p2p", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["src"], r["dst"], r["link"]) for r in data["pairs"]] == [(0, 1, "NV18"), (1, 0, "NV18")]
    assert data["pairs"][0]["peak_gbps"] == pytest.approx(450.0)
    assert data["matrices"]["oneway_gbps"]["title"] == p2p_matrix.KIND_BY_KEY["oneway_gbps"].title
    assert len(data["matrices"]["latency_us"]["values"]) == 2 and data["failures"] == []


@without_gpu
def test_hardware_checks_skip_cleanly_without_gpus(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "hardware", "-k", "p2p", "-p", "no:cacheprovider",
                          "--report-dir", str(tmp_path / "report"), "-rs"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 skipped" in run.stdout and "Traceback" not in run.stdout + run.stderr
    reason = "P2P needs ≥ 2 GPUs, found 0 (no CUDA device: PyTorch"
    assert run.stdout.count(reason) == 2
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    checks = {c["check"]: c for c in metrics["checks"]}
    assert set(checks) == {"p2p", "p2p_matrices"}
    assert all(c["outcome"] == "skipped" and reason in c["message"] for c in checks.values())
