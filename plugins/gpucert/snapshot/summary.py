"""Label/value rows for the report card and `gpucert snapshot`: the snapshot at a glance."""

from __future__ import annotations

from collections import Counter

from .compare import digest
from .profile import gpu_pairs, profile_name

_SOFTWARE_ORDER = ("python", "torch", "cuda_runtime", "nccl", "vllm", "ray", "transformers",
                   "nvidia-ml-py", "gpucert")


def summary(snapshot: dict) -> list[tuple[str, str]]:
    gpus = snapshot.get("gpus") or []
    rows = [
        ("profile", profile_name(snapshot)),
        ("source", f"{snapshot.get('source')} at {snapshot.get('taken_at')}"),
        ("host", _host(snapshot.get("host"))),
        ("driver", _driver(snapshot.get("driver"))),
        ("software", _software(snapshot.get("software"))),
        ("GPUs", _gpus(gpus)),
        ("NVLink", _nvlink(gpus)),
        ("topology", _topology(snapshot.get("topology"))),
        ("PCIe", _pcie(gpus)),
        ("ECC", _ecc(gpus)),
        ("digest", digest(snapshot)),
    ]
    if snapshot.get("notes"):
        rows.append(("notes", "; ".join(snapshot["notes"])))
    return rows


def _host(host: dict | None) -> str:
    if not host:
        return "unknown"
    parts = [host.get("hostname"), host.get("os"),
             f"kernel {host['kernel']}" if host.get("kernel") else None]
    if host.get("cpu_count") or host.get("cpu_model"):
        parts.append(" ".join(str(p) for p in (f"{host.get('cpu_count')}×" if host.get("cpu_count")
                                              else None, host.get("cpu_model")) if p))
    if host.get("memory_total_mib"):
        parts.append(f"{host['memory_total_mib'] / 1024:.0f} GiB RAM")
    return " · ".join(p for p in parts if p) or "unknown"


def _driver(driver: dict | None) -> str:
    driver = driver or {}
    if not driver.get("version"):
        return "none"
    cuda = driver.get("cuda_driver_version")
    return f"{driver['version']}" + (f" (CUDA {cuda})" if cuda else "")


def _software(software: dict | None) -> str:
    if not software:
        return "unknown"
    return " · ".join(f"{name} {software[name]}" for name in _SOFTWARE_ORDER
                      if software.get(name)) or "none"


def _gpus(gpus: list[dict]) -> str:
    if not gpus:
        return "none"
    models = Counter((gpu.get("name") or "unknown", gpu.get("memory_total_mib")) for gpu in gpus)
    return ", ".join(f"{count}× {name}" + (f" ({memory} MiB)" if memory else "")
                     for (name, memory), count in models.items())


def _nvlink(gpus: list[dict]) -> str:
    """"18 active links per GPU × 26.562 GB/s" when every GPU agrees, else one entry per GPU."""
    per_gpu = []
    for gpu in gpus:
        links = gpu.get("nvlink")
        if links is None:
            per_gpu.append((gpu["index"], None))
            continue
        active = [link for link in links if link["active"]]
        speeds = sorted({link["speed_gbps"] for link in active if link["speed_gbps"]})
        speed = " / ".join(f"{s:g}" for s in speeds)
        per_gpu.append((gpu["index"], f"{len(active)}/{len(links)} active"
                        + (f" × {speed} GB/s" if speed else "")))
    if not per_gpu:
        return "none"
    described = {text for _, text in per_gpu}
    if len(described) == 1:
        only = described.pop()
        if only is None:
            return "unknown"
        return f"{only} per GPU" if len(per_gpu) > 1 else only
    return "; ".join(f"GPU{index} {text or 'unknown'}" for index, text in per_gpu)


def _topology(topology: dict | None) -> str:
    pairs = gpu_pairs(topology)
    if topology is None:
        return "unknown"
    if not pairs:
        return "single GPU" if (topology.get("matrix")) else "none"
    if len(pairs) <= 4:
        return ", ".join(f"{a}-{b} {link}" for a, b, link in pairs)
    by_link = Counter(link for _, _, link in pairs)
    return ", ".join(f"{link} ×{count} pairs" for link, count in by_link.most_common())


def _pcie(gpus: list[dict]) -> str:
    described = []
    for gpu in gpus:
        pcie = gpu.get("pcie") or {}
        text = (f"Gen{pcie.get('gen_current')} x{pcie.get('width_current')} "
                f"(max Gen{pcie.get('gen_max')} x{pcie.get('width_max')})")
        described.append((gpu["index"], text))
    if not described:
        return "none"
    if len({text for _, text in described}) == 1:
        return described[0][1] + (" on every GPU" if len(described) > 1 else "")
    return "; ".join(f"GPU{index} {text}" for index, text in described)


def _ecc(gpus: list[dict]) -> str:
    if not gpus:
        return "none"
    enabled = sum(bool((gpu.get("ecc") or {}).get("mode_current")) for gpu in gpus)

    def total(kind: str) -> int:
        return sum(count or 0 for gpu in gpus
                   for bucket in ("volatile", "aggregate")
                   for name, count in ((gpu.get("ecc") or {}).get(bucket) or {}).items()
                   if name.endswith(f"_{kind}"))

    remapped = sum((gpu.get("remapped_rows") or {}).get("uncorrectable") or 0 for gpu in gpus)
    pending = sum(bool((gpu.get("remapped_rows") or {}).get("pending")) for gpu in gpus)
    return (f"enabled on {enabled}/{len(gpus)} GPUs · uncorrectable {total('uncorrectable')} · "
            f"correctable {total('correctable')} · remapped rows (uncorrectable) {remapped}"
            + (f" · {pending} GPU(s) with a remap pending" if pending else ""))
