"""The suite's checks (hardware/, inference/) and its self-tests (selftest/).

A package, as is each folder below it: a test module imports its helpers through the package
(`from .load import run_level`), so it works under any --import-mode and does not depend on
pytest's default "prepend" mode putting the test file's own folder on sys.path."""
