"""Parser for `nvidia-smi nvlink -s`: per GPU, each link's state and per-direction speed.

    GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)
         Link 0: 26.562 GB/s
         Link 3: <inactive>

A GPU without NVLink prints a sentence instead of links ("... all links are inActive"); it gets
an empty list. The UUID in the header is not kept: `nvidia-smi -q` is the source of identity.
"""

from __future__ import annotations

import re

from .schema import nvlink_entry
from .values import to_float

_GPU = re.compile(r"^GPU\s+(?P<index>\d+)\s*:")
_LINK = re.compile(r"^\s*Link\s+(?P<link>\d+)\s*:\s*(?P<state>.*?)\s*$")
_SPEED = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[GM])B/s", re.IGNORECASE)


def parse(raw: str) -> dict[int, list[dict]]:
    """{gpu index: [{"link": 0, "active": True, "speed_gbps": 26.562}, ...]}."""
    links: dict[int, list[dict]] = {}
    current: list[dict] | None = None
    for line in raw.splitlines():
        gpu = _GPU.match(line)
        if gpu:
            current = links.setdefault(int(gpu.group("index")), [])
            continue
        link = _LINK.match(line)
        if link and current is not None:
            current.append(_link(int(link.group("link")), link.group("state")))
    return links


def _link(number: int, state: str) -> dict:
    """"26.562 GB/s" is an active link at that speed; "<inactive>" (or any other word) is down."""
    speed = _SPEED.match(state)
    if not speed:
        return nvlink_entry(number, False, None)
    gbps = to_float(speed.group("number"))
    if speed.group("unit").upper() == "M":
        gbps = round(gbps / 1000, 3)
    return nvlink_entry(number, True, gbps)
