"""Byte sizes as operators type them: binary multiples, as nccl-tests reads -b/-e."""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'8', '64K', '8G', '1MiB', '1.5G' → bytes (K, M, G, T are powers of 1024)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"bad size {text!r}: expected a byte count with an optional K, M, G or T suffix, e.g. 512M")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(nbytes: int) -> str:
    """8 → '8B', 2048 → '2KiB', 8 GiB → '8GiB'; a size no binary unit divides stays in bytes."""
    for suffix, unit in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return f"{nbytes}B"
