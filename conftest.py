# The gpucert plugin itself is loaded through its pytest11 entry point (pyproject.toml), so that
# `pytest -p no:gpucert` can turn it off. This file enables pytest's own `pytester`, which the
# self-tests in tests/selftest use to drive the plugin in a real pytest session, and stops a run
# that missed this repo's settings.
from pathlib import Path

pytest_plugins = ["pytester"]


def pytest_configure(config):
    # pytest reads this repo's settings (testpaths, junit_family xunit1 for the metrics'
    # properties) only from a rootdir it infers from the arguments, before any plugin's options
    # exist: `--baselines-dir /abs/path` (the value as a separate word) makes /abs/path look like a
    # test path and moves the rootdir there, silently dropping those settings.
    if config.inipath is None:
        import pytest

        raise pytest.UsageError(
            f"gpucert: pytest did not read {Path(__file__).with_name('pyproject.toml')} (its rootdir became "
            f"{config.rootpath}): give a path option's value after '=' (--baselines-dir=/abs/path) or add "
            f"-c pyproject.toml")
