# The gpucert plugin itself is loaded through its pytest11 entry point (pyproject.toml), so that
# `pytest -p no:gpucert` can turn it off. This file only enables pytest's own `pytester`, which
# the self-tests in tests/selftest use to drive the plugin in a real pytest session.
pytest_plugins = ["pytester"]
