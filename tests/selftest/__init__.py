"""The suite's own tests (CPU, `make test`); a package for the reason in tests/__init__.py."""
