"""One rank of the burn-in: `python -m gpucert.physics.burnin_worker CONFIG.json RANK`.

burnin.run starts one fresh interpreter per device (never a fork after CUDA init). With two or
more ranks they join a process group through a FileStore in the workdir (as the NCCL sweep's
ranks do: no TCP listener) for the together phase's all-reduce. The result goes to rank<R>.json
beside the config, written whole (a temporary file renamed), so the launcher reads all or nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from gpucert.physics import burnin


def _exit_later(seconds: float) -> None:
    """The planted fault of a rank that dies mid-run (test hook): no goodbye, no result."""
    def die():
        time.sleep(seconds)
        os._exit(70)
    threading.Thread(target=die, daemon=True).start()


def main(argv: list[str]) -> int:
    config_path, rank = Path(argv[0]), int(argv[1])
    config = burnin.BurninConfig(**json.loads(config_path.read_text()))
    if config.fault.get("rank") == rank and config.fault.get("exit_after_s") is not None:
        _exit_later(float(config.fault["exit_after_s"]))
    if config.devices[rank].startswith("cuda"):
        import torch
        torch.cuda.set_device(config.devices[rank])
    joined = []

    def join():
        """The process group, joined only before the together phase: a rank that died earlier
        costs the others the all-reduce, never the phases they run alone."""
        from gpucert.physics.nccl import worker
        worker.init(config.backend, rank, len(config.devices), timeout_s=burnin.join_timeout_s(config),
                    rendezvous=str(config_path.parent / "rendezvous"))
        import torch.distributed
        joined.append(torch.distributed)
        return torch.distributed

    out = config_path.parent / f"rank{rank}.json"

    def save(result: dict) -> None:
        part = out.with_suffix(".part")
        part.write_text(json.dumps(result))
        os.replace(part, out)

    result = burnin.run_rank(config, rank, join if len(config.devices) > 1 else None, save)
    allreduce = result["phases"]["together"].get("allreduce") or {}
    if joined and not allreduce.get("error"):
        joined[0].destroy_process_group()  # not with a collective still pending: it would wait on it
    sys.stdout.flush()
    os._exit(0)  # a collective thread stuck on a dead peer must not hold the interpreter's exit


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
