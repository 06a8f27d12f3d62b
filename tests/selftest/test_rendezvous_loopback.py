"""Nothing the NCCL/gloo sweep starts listens beyond loopback: a real 2-process gloo sweep runs
here while this test reads the ranks' listening sockets from the kernel (/proc/<pid>/fd socket
inodes matched against /proc/net/tcp and tcp6), so a TCPStore on `*:port` or a transport bound to
eth0 is seen as the kernel sees it."""

import ipaddress
import os
import threading
import time
from pathlib import Path

import pytest

from gpucert.physics import nccl
from gpucert.physics.nccl import faults

QUICK = {"warmup": 1, "iters": 3}
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
PROC = Path("/proc")

pytestmark = pytest.mark.skipif(not (PROC / "net" / "tcp").exists(), reason="needs Linux /proc/net/tcp")


def _address(hex_address: str, family: str) -> ipaddress._BaseAddress:
    """/proc/net/tcp writes the address as the kernel holds it: 32-bit words in host byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.IPv4Address(words) if family == "tcp" else ipaddress.IPv6Address(words)


def listeners_by_inode() -> dict[int, str]:
    """Every listening TCP socket of this network namespace: inode -> "address:port"."""
    found = {}
    for family in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / family).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == LISTEN:
                address, port = local.split(":")
                found[inode] = f"{_address(address, family)}:{int(port, 16)}"
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed between listing and reading
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except (FileNotFoundError, PermissionError):
        pass
    return inodes


def rank_pids() -> list[int]:
    """This process's children that are sweep ranks."""
    pids = []
    for task in (PROC / "self" / "task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = (PROC / child / "cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"gpucert.physics.nccl.worker" in cmdline:
                pids.append(int(child))
    return pids


def watch_listeners(stop: threading.Event, seen: dict[int, set[str]]) -> None:
    """Until `stop`: every listening socket any rank holds, per rank pid."""
    while not stop.is_set():
        pids = rank_pids()
        if pids:
            listening = listeners_by_inode()
            for pid in pids:
                seen.setdefault(pid, set()).update(
                    listening[inode] for inode in socket_inodes(pid) if inode in listening)
        time.sleep(0.02)


def not_loopback(address_port: str) -> bool:
    address = ipaddress.ip_address(address_port.rsplit(":", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return not (mapped or address).is_loopback


def sweep_and_watch(monkeypatch, env: dict[str, str]):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # rank 1 hangs before the all_gather: both ranks sit in the process group until the stall
    # timeout, long enough for every listener to be seen
    monkeypatch.setenv(faults.ENV, "hang:rank=1:op=all_gather")
    seen: dict[int, set[str]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_listeners, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        result = nccl.run(nccl.SweepConfig(backend="gloo", nproc=2, ops=("all_reduce", "all_gather"),
                                           sizes=(8,), stall_timeout_s=3, **QUICK))
    finally:
        stop.set()
        watcher.join(timeout=5)
    return result, seen


@pytest.mark.parametrize("env", [
    pytest.param({}, id="default-environment", marks=pytest.mark.fault(
        "network", "a real 2-process gloo sweep; torch's TCPStore rendezvous listens on *:port",
        "every socket a rank listens on (kernel's view, /proc/net/tcp[6]) is 127.0.0.1 or ::1")),
    pytest.param({"GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "eth0", "MASTER_ADDR": "0.0.0.0"},
                 id="inherited-eth0", marks=pytest.mark.fault(
        "network", "the caller's environment names eth0 for gloo/NCCL sockets and MASTER_ADDR=0.0.0.0",
        "ignored: still loopback only (GPUCERT_SOCKET_IFNAME is the one override), a note says so")),
])
@pytest.mark.slow("gloo ranks")
def test_sweep_ranks_listen_on_loopback_only(monkeypatch, env):
    if env and not (PROC / "sys" / "net" / "ipv4" / "conf" / "eth0").exists():
        pytest.skip("no eth0 here to bind to")
    result, seen = sweep_and_watch(monkeypatch, env)
    assert result.status == "timeout" and result.rows[0]["status"] == "ok", (result.error, result.rows)
    assert len(seen) == 2, seen  # both ranks were watched
    listening = set().union(*seen.values())
    assert listening, "no listener seen: the observation itself failed"  # gloo's pairs listen
    assert not [a for a in listening if not_loopback(a)], seen
    if env:
        assert any("GLOO_SOCKET_IFNAME=eth0" in note and "GPUCERT_SOCKET_IFNAME" in note
                   for note in result.notes), result.notes


@pytest.mark.fault("network", "NCCL_SOCKET_IFNAME=eth0 inherited by an NCCL sweep (NCCL's bootstrap would listen on eth0)",
                   "each live rank's /proc/<pid>/environ has NCCL_/GLOO_SOCKET_IFNAME=lo and no MASTER_PORT")
@pytest.mark.slow("gloo ranks")
def test_rank_environment_pins_the_transports_to_loopback(monkeypatch):
    """NCCL cannot run here (no GPU): what it would read, each rank's environment, is checked."""
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    monkeypatch.setenv(faults.ENV, "hang:rank=1:op=all_reduce")
    environ: dict[int, dict[str, str]] = {}

    def read_environ(stop):
        while not stop.is_set() and len(environ) < 2:
            for pid in rank_pids():
                try:
                    raw = (PROC / str(pid) / "environ").read_bytes()
                except FileNotFoundError:
                    continue
                environ[pid] = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            time.sleep(0.02)

    stop = threading.Event()
    reader = threading.Thread(target=read_environ, args=(stop,), daemon=True)
    reader.start()
    try:
        nccl.run(nccl.SweepConfig(backend="gloo", nproc=2, ops=("all_reduce",), sizes=(8,),
                                  stall_timeout_s=2, **QUICK))
    finally:
        stop.set()
        reader.join(timeout=5)
    assert len(environ) == 2
    for env in environ.values():
        assert env["NCCL_SOCKET_IFNAME"] == "lo" and env["GLOO_SOCKET_IFNAME"] == "lo"
        assert "MASTER_PORT" not in env  # no TCP rendezvous at all

    # the documented override, for later multi-node work
    override, _ = nccl.sweep.rank_environment({"GPUCERT_SOCKET_IFNAME": "eth0"})
    assert (override["NCCL_SOCKET_IFNAME"], override["GLOO_SOCKET_IFNAME"]) == ("eth0", "eth0")
