"""How many GPUs a Python sees (gpucert.gpu_probe): a CPU wheel of PyTorch answers from its metadata
without the seconds torch's import costs every pytest run that collects the checks; a torch found
earlier on the path than that wheel (an engine's own, a source build) is imported and asked."""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from gpucert import gpu_probe

from .test_inference_checks import STAND_IN_TORCH

PLUGINS = Path(gpu_probe.__file__).resolve().parents[1]
cpu_wheel = pytest.mark.skipif(not metadata.version("torch").endswith("+cpu"),
                               reason="this Python's PyTorch is not a CPU wheel")


def probe(*code: str, path: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (path, PLUGINS) if p)}
    run = subprocess.run([sys.executable, "-c", *code], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


@cpu_wheel
def test_a_cpu_wheel_answers_without_importing_torch():
    out = probe("import json, sys\nfrom gpucert import gpu_probe\n"
                "print(json.dumps([gpu_probe.visible(), 'torch' in sys.modules]))")
    (found, why), imported = json.loads(out)
    assert found == 0 and why == f"no CUDA device: PyTorch {metadata.version('torch')} is a CPU build"
    assert not imported


@cpu_wheel
def test_a_torch_earlier_on_the_path_than_the_cpu_wheel_is_the_one_asked(tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(STAND_IN_TORCH)  # CUDA torch seeing one GPU
    source = Path(gpu_probe.__file__).read_text()  # as gpus.visible_to runs it in an engine's Python
    assert json.loads(probe(source, path=tmp_path)) == [1, ""]
