"""The snapshot's shape in one place: version, error type, captured file names, the GPU record.

Both GPU readers (NVML live, nvidia-smi text) must produce exactly the keys of `empty_gpu()`, so
a snapshot taken live and one parsed from a capture of the same node compare field by field.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

# Captured outputs read by collect(from_dir=...), by these exact names.
QUERY_FILE = "nvidia-smi-q.txt"          # nvidia-smi -q
TOPO_FILE = "nvidia-smi-topo-m.txt"      # nvidia-smi topo -m
NVLINK_FILE = "nvidia-smi-nvlink-s.txt"  # nvidia-smi nvlink -s
TABLE_FILE = "nvidia-smi.txt"            # plain nvidia-smi (driver / CUDA header)
CAPTURE_FILES = (QUERY_FILE, TOPO_FILE, NVLINK_FILE, TABLE_FILE)
# nvidia-smi -q -x: where captured, the GPUs are read from it (nvidia-smi-q.txt then optional)
QUERY_XML_FILE = "nvidia-smi-q.xml"

# Optional host files next to them (e.g. `hostname > hostname.txt; cp /etc/os-release
# os-release.txt; uname -r > uname-r.txt; cp /proc/cpuinfo cpuinfo.txt; cp /proc/meminfo
# meminfo.txt`); without them the captured node's host section is null.
HOST_FILES = ("hostname.txt", "os-release.txt", "uname-r.txt", "cpuinfo.txt", "meminfo.txt")


class SnapshotError(ValueError):
    """Input that cannot become a snapshot: no captured outputs, a file that is not a snapshot."""


def ecc_counts(sram_correctable=None, sram_uncorrectable=None,
               dram_correctable=None, dram_uncorrectable=None) -> dict:
    return {
        "sram_correctable": sram_correctable,
        "sram_uncorrectable": sram_uncorrectable,
        "dram_correctable": dram_correctable,
        "dram_uncorrectable": dram_uncorrectable,
    }


def empty_gpu(index: int) -> dict:
    """Every per-GPU field with no value. `volatile` holds what changes from second to second
    (excluded from digest and diff); everything else describes the node's configuration/health."""
    return {
        "index": index,
        "name": None,
        "uuid": None,
        "serial": None,
        "pci_bus_id": None,
        "memory_total_mib": None,
        "vbios": None,
        "architecture": None,
        "persistence_mode": None,
        "compute_mode": None,
        "mig_mode": {"current": None, "pending": None},
        "ecc": {"mode_current": None, "mode_pending": None,
                "volatile": ecc_counts(), "aggregate": ecc_counts()},
        "retired_pages": {"single_bit": None, "double_bit": None, "pending": None},
        "remapped_rows": {"correctable": None, "uncorrectable": None, "pending": None,
                          "failure": None},
        "power_limit_w": {"current": None, "default": None, "max": None},
        "clocks_max_mhz": {"graphics": None, "sm": None, "memory": None},
        "clocks_applications_mhz": {"graphics": None, "memory": None},
        "pcie": {"gen_current": None, "gen_max": None, "width_current": None, "width_max": None},
        "nvlink": None,            # list of {"link", "active", "speed_gbps"}; [] = no NVLink
        "throttle_reasons": None,  # sorted lower_snake names of active clock-event reasons
        "volatile": {
            "performance_state": None,
            "temperature_c": None,
            "memory_temperature_c": None,
            "power_draw_w": None,
            "clocks_mhz": {"graphics": None, "sm": None, "memory": None},
            "utilization_pct": {"gpu": None, "memory": None},
        },
    }


def nvlink_entry(link: int, active: bool, speed_gbps: float | None) -> dict:
    """One NVLink link; an inactive link has no speed."""
    return {"link": link, "active": active, "speed_gbps": speed_gbps if active else None}
