"""Parser for plain `nvidia-smi`: only its banner (driver and CUDA driver version), the fallback
when `nvidia-smi -q` was not captured."""

from __future__ import annotations

import re

_DRIVER = re.compile(r"Driver Version:\s*(?P<value>[0-9][0-9.]*)")
_CUDA = re.compile(r"CUDA Version:\s*(?P<value>[0-9][0-9.]*)")


def parse(raw: str) -> dict:
    """{"version": "580.159.04", "cuda_driver_version": "13.0"} (None where absent)."""
    driver = _DRIVER.search(raw)
    cuda = _CUDA.search(raw)
    return {
        "version": driver.group("value") if driver else None,
        "cuda_driver_version": cuda.group("value") if cuda else None,
    }
