"""The suite's own phases as named ranges in a trace: an NVTX range (Nsight Systems shows it on
the process's timeline) and a PyTorch profiler range, around each check and each micro-benchmark.
Run as `nsys profile … pytest -m hardware`, a user sees which of gpucert's checks each kernel
belongs to. Costs nothing where torch is not already loaded (the plugin never imports it for this)
or has no CUDA (a CPU build's NVTX calls would raise)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


@contextmanager
def phase(name: str) -> Iterator[None]:
    torch = sys.modules.get("torch")
    with ExitStack() as stack:
        if torch is not None:
            try:
                if torch.cuda.is_available():
                    stack.enter_context(torch.cuda.nvtx.range(f"gpucert: {name}"))
                stack.enter_context(torch.profiler.record_function(f"gpucert: {name}"))
            except (RuntimeError, AttributeError):  # NVTX not built in: the range is only for traces
                pass
        yield
