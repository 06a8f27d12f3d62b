"""The code stays clean under pyproject.toml's [tool.ruff] (pyflakes, pycodestyle, bugbear,
pyupgrade to 3.10, no shell=True): a finding fails `make test`."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed (make test installs it: tools/setup_venv.py --selftest)")
        pytest.skip("ruff is not installed (make test installs it)")
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "plugins", "tests", "tools",
                          "conftest.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
