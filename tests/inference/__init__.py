"""The inference checks (`pytest -m inference`); a package for the reason in tests/__init__.py."""
