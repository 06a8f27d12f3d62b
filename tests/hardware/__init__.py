"""The hardware checks (`pytest -m hardware`); a package for the reason in tests/__init__.py."""
