"""Memory integrity (`make burnin`, marker `burnin`): per GPU, write-and-verify patterns — walking
ones and zeros, address-in-address, seeded random — over 90 % of the free memory, every mismatch
counted and the first located (chunk, offset, address, the bits that flipped), the GB/s of the
test (gpucert.physics.memtest; docs/METRICS.md, Burn-in). Any mismatch fails."""

from __future__ import annotations

import json
import os

import pytest

from gpucert.physics import memtest

from .test_burnin import _devices

pytestmark = pytest.mark.burnin
CPU_REHEARSAL_BYTES = 64 << 20  # --burnin-devices cpu: the engine's self-test size, not the host's RAM


def _planted():
    """The self-tests' planted corruption (GPUCERT_MEMTEST_FAULT, JSON {"pattern", "chunk", "word",
    "bit"}): that bit of that word flipped for real after the pattern's write, before its verify."""
    text = os.environ.get("GPUCERT_MEMTEST_FAULT")
    if not text:
        return None
    fault = json.loads(text)

    def corrupt(pattern: str, chunks: list) -> None:
        if pattern == fault["pattern"]:
            chunks[fault["chunk"]].view(-1)[fault["word"]] ^= 1 << fault["bit"]
    return corrupt


def pytest_generate_tests(metafunc):
    if "memtest_device" in metafunc.fixturenames:
        devices = metafunc.config.getoption("--burnin-devices")
        ids = [d.strip() for d in devices.split(",")] if devices else None
        metafunc.parametrize("memtest_device", list(range(len(ids))) if ids else [0],
                             ids=[f"gpu{i}" for i in (range(len(ids)) if ids else [0])])


def test_memtest(gpucert, request, memtest_device):
    devices = _devices(request.config)
    if memtest_device >= len(devices):
        pytest.skip(f"not applicable: no device {memtest_device}")
    device = devices[memtest_device]
    size = CPU_REHEARSAL_BYTES if device == "cpu" else None
    result = memtest.run_memtest(device, size_bytes=size, corrupt=_planted())
    gpucert.finding("memtest", device=device, bytes_tested=f"{result.bytes_tested / 2**30:.2f} GiB",
                    of_free=None if result.fraction_of_free is None else f"{result.fraction_of_free * 100:.1f} %",
                    patterns=len(result.patterns), seconds=f"{result.wall_s:.1f}", note=result.note or "")
    for pattern in result.patterns:
        for where in pattern.located:
            gpucert.finding("memtest_error", **{k: str(v) for k, v in where.items()})
    gpucert.record("memtest_errors", result.errors, unit="words", direction="lower",
                   note=f"mismatching words over {len(result.patterns)} pattern passes of "
                        f"{result.bytes_tested / 2**30:.2f} GiB")
    if result.gbps is not None:
        gpucert.record("memtest_gbps", result.gbps, unit="GB/s", direction="higher",
                       note="bytes written and read by the patterns ÷ their time")
    if result.fraction_of_free is not None:
        gpucert.record("memtest_coverage_pct", result.fraction_of_free * 100, unit="%", direction="higher",
                       note="of the free memory at the start (mem_get_info)")
    if result.status == "error":
        pytest.fail(f"memtest on {device}: {result.error}", pytrace=False)
