"""The host: name, OS, kernel, CPU and memory — live from this machine, or from captured files."""

from __future__ import annotations

import os
import platform
import re
import socket
from pathlib import Path

from .schema import HOST_FILES


def live() -> dict:
    return {
        "hostname": socket.gethostname() or None,
        "os": os_pretty_name(_read(Path("/etc/os-release"))),
        "kernel": platform.release() or None,
        "cpu_model": cpu_model(_read(Path("/proc/cpuinfo"))) or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "memory_total_mib": memory_total_mib(_read(Path("/proc/meminfo"))),
    }


def captured(directory: Path) -> dict | None:
    """Host fields from the optional capture files (schema.HOST_FILES); None when none exist —
    this machine's values must never pass for the captured node's."""
    texts = {name: _read(directory / name) for name in HOST_FILES}
    if not any(texts.values()):
        return None
    hostname, kernel = texts["hostname.txt"], texts["uname-r.txt"]
    cpuinfo = texts["cpuinfo.txt"]
    return {
        "hostname": hostname.strip() or None if hostname else None,
        "os": os_pretty_name(texts["os-release.txt"]),
        "kernel": kernel.strip() or None if kernel else None,
        "cpu_model": cpu_model(cpuinfo),
        "cpu_count": len(re.findall(r"^processor\s*:", cpuinfo, re.M)) or None if cpuinfo else None,
        "memory_total_mib": memory_total_mib(texts["meminfo.txt"]),
    }


def os_pretty_name(os_release: str | None) -> str | None:
    match = re.search(r'^PRETTY_NAME=("?)(?P<name>.*)\1\s*$', os_release or "", re.M)
    return match.group("name") if match else None


def cpu_model(cpuinfo: str | None) -> str | None:
    match = re.search(r"^model name\s*:\s*(?P<model>.+)$", cpuinfo or "", re.M)
    return match.group("model").strip() if match else None


def memory_total_mib(meminfo: str | None) -> int | None:
    match = re.search(r"^MemTotal:\s*(?P<kib>\d+)\s*kB", meminfo or "", re.M)
    return int(match.group("kib")) // 1024 if match else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None
