"""The memory copy engine on CPU tensors: host copy bandwidth, bytes formula, data check."""

import pytest

from gpucert.physics import memory
from gpucert.physics.core import measure
from gpucert.physics.memory import MemoryCopy

MIB = 1 << 20


def test_host_copy_measures_read_plus_write_bytes():
    result = measure(MemoryCopy("device_copy", 4 * MIB), "cpu", warmup=1, reps=4)
    assert result.status == "ok", result.error
    assert result.bytes == 2 * 4 * MIB  # read + written, as the datasheet counts bandwidth
    assert result.gbps > 0 and len(result.rate_samples("gbps")) == 4


@pytest.mark.parametrize("kind", ["h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable"])
def test_host_device_copies_skip_on_cpu_with_the_reason(kind):
    result = measure(MemoryCopy(kind, MIB), "cpu")
    assert result.status == "skipped"
    assert result.error == f"{kind} copies between host and a CUDA GPU; cpu is not one"


def test_one_pcie_crossing_counts_the_size_once():
    assert memory.bytes_per_iteration("h2d_pinned", 1000) == 1000
    assert memory.bytes_per_iteration("device_copy", 1000) == 2000


class Skipping(MemoryCopy):
    """Copies only the first half: the sampled blocks of the second half stay zero."""

    def op(self):
        half = self.size // 2
        self.dst[:half].copy_(self.src[:half])


@pytest.mark.fault('engine', 'a memory copy that copies only half the buffer', 'status error: sampled blocks differ')
def test_the_data_check_catches_an_incomplete_copy():
    result = measure(Skipping("device_copy", 4 * MIB), "cpu", warmup=0, reps=2)
    assert result.status == "error"
    assert result.error.startswith("wrong result: ") and "sampled 4096-byte blocks differ" in result.error


def test_sizes_round_down_to_the_pattern_and_bad_input_is_refused():
    assert MemoryCopy("device_copy", 10_000).params == {"kind": "device_copy", "size_bytes": 8192}
    with pytest.raises(ValueError, match="at least 4096"):
        MemoryCopy("device_copy", 100)
    with pytest.raises(ValueError, match="valid: device_copy, h2d_pinned"):
        MemoryCopy("p2p", MIB)


def test_each_kind_is_judged_against_its_own_datasheet_figure():
    from gpucert.physics.datasheet import lookup
    h200 = lookup("NVIDIA H200")
    assert memory.datasheet_peak("device_copy", h200) == 4800
    assert memory.datasheet_peak("d2h_pageable", h200) == 64
    assert memory.datasheet_peak("h2d_pinned", None) is None
