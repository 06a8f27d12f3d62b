"""Text → typed value helpers shared by the nvidia-smi parsers.

nvidia-smi prints every value as text with a unit ("700.00 W", "16x", "81559 MiB") and uses a
handful of spellings for "no value"; the snapshot stores ints, floats, bools and None instead, so
that two snapshots compare by value and JSON consumers need no parsing of their own.
"""

from __future__ import annotations

import re

# Spellings nvidia-smi uses for "this field has no value on this GPU / driver".
_NO_VALUE = {
    "", "n/a", "[n/a]", "unknown", "[unknown error]", "not supported", "[not supported]",
    "requested functionality has been deprecated", "insufficient permissions",
}
_TRUE = {"enabled", "enable", "yes", "active", "on", "true"}
_FALSE = {"disabled", "disable", "no", "not active", "off", "false"}
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?\d+(?:\.\d+)?")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def text(value: str | None) -> str | None:
    """The value as stripped text, or None for nvidia-smi's "N/A" family."""
    if value is None:
        return None
    value = value.strip()
    return None if value.lower() in _NO_VALUE else value


def to_int(value: str | None) -> int | None:
    """First integer in the text: "16x" → 16, "81559 MiB" → 81559."""
    value = text(value)
    match = _INT.search(value) if value else None
    return int(match.group()) if match else None


def to_float(value: str | None) -> float | None:
    """First decimal number in the text: "700.00 W" → 700.0, "26.562 GB/s" → 26.562."""
    value = text(value)
    match = _FLOAT.search(value) if value else None
    return float(match.group()) if match else None


def to_bool(value: str | None) -> bool | None:
    """Enabled/Yes/Active → True, Disabled/No/Not Active → False, anything else → None."""
    value = text(value)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def snake(name: str) -> str:
    """A display name as a lower_snake identifier: "SW Power Cap" → "sw_power_cap"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def strip_ansi(raw: str) -> str:
    """nvidia-smi underlines table headers with ANSI escapes when it thinks it has a terminal."""
    return _ANSI.sub("", raw)
