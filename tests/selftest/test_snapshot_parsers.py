"""nvidia-smi parsers on the real captured outputs of a 2× H100 NVLink node, plus the spellings
other driver releases use."""


import pytest

from gpucert.snapshot import smi_nvlink, smi_query, smi_table, smi_topo, values

from .captures import FIXTURE, UUID1

UUID0 = "GPU-e6e6948f-a562-7039-2777-28ff85a40348"


def read(name: str) -> str:
    return (FIXTURE / name).read_text()


@pytest.fixture(scope="module")
def query():
    return smi_query.parse(read("nvidia-smi-q.txt"))


def test_query_driver(query):
    assert query["driver"] == {"version": "580.159.04", "cuda_driver_version": "13.0"}


def test_query_identity_of_both_gpus(query):
    gpus = query["gpus"]
    assert [g["index"] for g in gpus] == [0, 1]
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert [g["uuid"] for g in gpus] == [UUID0, UUID1]
    assert [g["serial"] for g in gpus] == ["1752524018867", "1752524022503"]
    assert [g["pci_bus_id"] for g in gpus] == ["00000000:00:06.0", "00000000:00:07.0"]
    assert gpus[0]["architecture"] == "Hopper"
    assert gpus[0]["vbios"] == "96.00.DA.00.0C"


def test_query_typed_values(query):
    gpu = query["gpus"][0]
    assert gpu["memory_total_mib"] == 81559
    assert gpu["persistence_mode"] is True
    assert gpu["compute_mode"] == "Default"
    assert gpu["mig_mode"] == {"current": False, "pending": False}
    assert gpu["ecc"]["mode_current"] is True and gpu["ecc"]["mode_pending"] is True
    assert gpu["ecc"]["volatile"] == {"sram_correctable": 0, "sram_uncorrectable": 0,
                                      "dram_correctable": 0, "dram_uncorrectable": 0}
    assert gpu["retired_pages"] == {"single_bit": None, "double_bit": None, "pending": None}
    assert gpu["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False,
                                    "failure": False}
    assert gpu["power_limit_w"] == {"current": 700.0, "default": 700.0, "max": 700.0}
    assert gpu["clocks_max_mhz"] == {"graphics": 1980, "sm": 1980, "memory": 2619}
    assert gpu["clocks_applications_mhz"] == {"graphics": 1980, "memory": 2619}
    assert gpu["pcie"] == {"gen_current": 5, "gen_max": 5, "width_current": 16, "width_max": 16}
    assert gpu["throttle_reasons"] == ["idle"]


def test_query_volatile_fields_are_kept_apart(query):
    volatile = query["gpus"][1]["volatile"]
    assert volatile["temperature_c"] == 32
    assert volatile["memory_temperature_c"] == 36
    assert volatile["power_draw_w"] == pytest.approx(70.79)
    assert volatile["clocks_mhz"] == {"graphics": 345, "sm": 345, "memory": 2619}
    assert volatile["performance_state"] == "P0"


def test_query_tree_keeps_value_and_children_of_one_key():
    tree = smi_query.parse_tree(read("nvidia-smi-q.txt"))
    reasons = smi_query.lookup(tree, "GPU 00000000:00:06.0", "Clocks Event Reasons")
    assert smi_query.lookup(reasons, "HW Slowdown") == "Not Active"
    assert smi_query.lookup(reasons, "HW Slowdown", "HW Thermal Slowdown") == "Not Active"
    # "GPU Memory Power Readings " has a trailing space in the real output
    assert smi_query.lookup(tree, "GPU 00000000:00:06.0", "gpu memory power readings",
                            "Average Power Draw") == "30.87 W"


OLDER_DRIVER_QUERY = """
==============NVSMI LOG==============

Driver Version                            : 535.104.05
CUDA Version                              : 12.2

Attached GPUs                             : 1
GPU 00000000:07:00.0
    Product Name                          : NVIDIA A100-SXM4-80GB
    GPU UUID                              : GPU-aaaaaaaa-0000-0000-0000-000000000000
    Clocks Throttle Reasons
        Idle                              : Not Active
        SW Power Cap                      : Active
        HW Slowdown                       : Active
            HW Thermal Slowdown           : Active
            HW Power Brake Slowdown       : Not Active
    ECC Errors
        Volatile
            SRAM Correctable              : 3
            SRAM Uncorrectable            : 1
            DRAM Correctable              : 0
            DRAM Uncorrectable            : 0
    Power Readings
        Power Draw                        : 351.20 W
        Power Limit                       : 400.00 W
        Default Power Limit               : 400.00 W
        Max Power Limit                   : 400.00 W
    Processes
        GPU instance ID                   : N/A
        Process ID                        : 1234
        GPU instance ID                   : N/A
        Process ID                        : 5678
"""


def test_query_older_spellings():
    gpu = smi_query.parse(OLDER_DRIVER_QUERY)["gpus"][0]
    assert gpu["pci_bus_id"] == "00000000:07:00.0"  # from the section header when PCI is absent
    assert gpu["throttle_reasons"] == ["hw_slowdown", "hw_thermal_slowdown", "sw_power_cap"]
    assert gpu["ecc"]["volatile"]["sram_correctable"] == 3
    assert gpu["ecc"]["volatile"]["sram_uncorrectable"] == 1
    assert gpu["power_limit_w"]["current"] == 400.0
    assert gpu["volatile"]["power_draw_w"] == pytest.approx(351.2)
    assert gpu["pcie"]["gen_current"] is None  # absent, not an error


def test_query_repeated_keys_are_numbered_not_overwritten():
    tree = smi_query.parse_tree(OLDER_DRIVER_QUERY)
    processes = smi_query.lookup(tree, "GPU 00000000:07:00.0", "Processes")
    assert processes["Process ID"] == "1234" and processes["Process ID (2)"] == "5678"


def test_topology_matrix_and_affinity():
    topology = smi_topo.parse(read("nvidia-smi-topo-m.txt"))  # header carries ANSI escapes
    assert topology["matrix"] == {"GPU0": {"GPU0": "X", "GPU1": "NV18"},
                                  "GPU1": {"GPU0": "NV18", "GPU1": "X"}}
    assert topology["cpu_affinity"] == {"GPU0": "0-31", "GPU1": "0-31"}
    assert topology["numa_affinity"] == {"GPU0": "0", "GPU1": "0"}


# Space-aligned (as pasted into an issue), with NICs and the NIC legend.
TOPO_WITH_NICS = """\
        GPU0    GPU1    NIC0    NIC1    CPU Affinity    NUMA Affinity   GPU NUMA ID
GPU0     X      NV6     PIX     SYS     6,14,22,30      3               N/A
GPU1    NV6      X      SYS     PIX     4,12,20,28      1               N/A
NIC0    PIX     SYS      X      SYS
NIC1    SYS     PIX     SYS      X

Legend:

  X    = Self
  NV#  = Connection traversing a bonded set of # NVLinks

NIC Legend:

  NIC0: mlx5_0
  NIC1: mlx5_1
"""


def test_topology_with_nics():
    topology = smi_topo.parse(TOPO_WITH_NICS)
    assert topology["matrix"]["GPU0"] == {"GPU0": "X", "GPU1": "NV6", "NIC0": "PIX", "NIC1": "SYS"}
    assert topology["matrix"]["NIC1"]["GPU1"] == "PIX"
    assert topology["cpu_affinity"] == {"GPU0": "6,14,22,30", "GPU1": "4,12,20,28"}
    assert topology["numa_affinity"] == {"GPU0": "3", "GPU1": "1"}
    assert topology["nics"] == {"NIC0": "mlx5_0", "NIC1": "mlx5_1"}


def test_nvlink_status():
    links = smi_nvlink.parse(read("nvidia-smi-nvlink-s.txt"))
    assert sorted(links) == [0, 1]
    for gpu_links in links.values():
        assert len(gpu_links) == 18
        assert all(link["active"] and link["speed_gbps"] == 26.562 for link in gpu_links)
    assert [link["link"] for link in links[1]] == list(range(18))


def test_nvlink_inactive_and_absent_links():
    raw = (
        "GPU 0: Tesla V100-SXM2-32GB (UUID: GPU-x)\n"
        "\t Link 0: 25.781 GB/s\n"
        "\t Link 3: <inactive>\n"
        "GPU 1: NVIDIA L40S (UUID: GPU-y)\n"
        "\t NVML: Unable to retrieve NVLink information as all links are inActive\n"
    )
    links = smi_nvlink.parse(raw)
    assert links[0] == [{"link": 0, "active": True, "speed_gbps": 25.781},
                        {"link": 3, "active": False, "speed_gbps": None}]
    assert links[1] == []


def test_table_banner():
    assert smi_table.parse(read("nvidia-smi.txt")) == {"version": "580.159.04",
                                                       "cuda_driver_version": "13.0"}


@pytest.mark.parametrize("raw, expected", [
    ("16x", 16), ("81559 MiB", 81559), ("N/A", None), ("[N/A]", None), (None, None), ("-8 C", -8),
])
def test_to_int(raw, expected):
    assert values.to_int(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Enabled", True), ("Yes", True), ("Active", True), ("Disabled", False), ("No", False),
    ("Not Active", False), ("N/A", None), ("Pass-Through", None),
])
def test_to_bool(raw, expected):
    assert values.to_bool(raw) is expected
