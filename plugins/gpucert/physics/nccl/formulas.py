"""Sizes and bandwidths exactly as nccl-tests defines them (doc/PERFORMANCE.md, src/*.cu).

- `bytes` of a row is the size nccl-tests prints for that collective: for all_gather,
  reduce_scatter and alltoall it is the per-rank chunk × n (the gathered / scattered whole), for
  the others the buffer each rank sends. A requested size that is not a multiple of
  n × element size is rounded down the way nccl-tests does (count = size // element size, then
  count // n per rank), so the printed size can be smaller than the one asked for.
- `count` is nccl-tests' count column: elements per rank for the split collectives
  (all_gather, reduce_scatter; for alltoall, the elements each rank sends to each peer), else
  the elements of the buffer.
- algbw = bytes / time (1e9 B/s); busbw = algbw × factor, the factor making the number comparable
  to the hardware's link speed whatever the rank count.
"""

from __future__ import annotations


OPS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "broadcast", "reduce", "sendrecv")

# collectives whose printed size is per-rank bytes × n (nccl-tests' getCollByteCount)
SPLIT_OPS = frozenset({"all_gather", "reduce_scatter", "alltoall"})

DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_ALIASES = {"float": "float32", "fp32": "float32", "bf16": "bfloat16", "half": "float16", "fp16": "float16"}



def bus_factor(op: str, nranks: int) -> float:
    """busbw / algbw for `op` on `nranks` ranks (nccl-tests doc/PERFORMANCE.md)."""
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    if op == "all_reduce":
        return 2 * (nranks - 1) / nranks
    if op in SPLIT_OPS:
        return (nranks - 1) / nranks
    if op in ("broadcast", "reduce", "sendrecv"):
        return 1.0
    raise ValueError(f"unknown collective {op!r} (valid: {', '.join(OPS)})")


def algbw_gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def busbw_gbps(op: str, nbytes: int, seconds: float, nranks: int) -> float:
    return algbw_gbps(nbytes, seconds) * bus_factor(op, nranks)


def element_size(dtype: str) -> int:
    return DTYPES[canonical_dtype(dtype)]


def canonical_dtype(name: str) -> str:
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        valid = ", ".join(list(DTYPES) + list(DTYPE_ALIASES))
        raise ValueError(f"unknown dtype {name!r} (valid: {valid})")
    return name


def op_count(op: str, size: int, nranks: int, elsize: int) -> tuple[int, int]:
    """(count, bytes) nccl-tests runs and prints for a requested `size` in bytes."""
    bus_factor(op, nranks)  # validates op
    count = size // elsize
    if op in SPLIT_OPS:
        per_rank = count // nranks
        return per_rank, per_rank * nranks * elsize
    return count, count * elsize


def size_list(min_bytes: int, max_bytes: int, step_factor: int = 2) -> list[int]:
    """min, min × f, min × f², … up to max inclusive (nccl-tests -b/-e/-f)."""
    if min_bytes < 1 or max_bytes < min_bytes:
        raise ValueError(f"need 1 <= min-bytes <= max-bytes, got {min_bytes} and {max_bytes}")
    if step_factor < 2:
        raise ValueError(f"step factor must be an integer >= 2, got {step_factor}")
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= step_factor
    return sizes


# The sizes the hardware check is parametrized over: every power of 4 from 8 B to 8 GiB, so the
# latency end (8 B), the protocol switches in between and the bandwidth end all show on the card
# at 16 rows per collective (nccl-tests -b 8 -e 8G -f 4).
HARDWARE_SIZES = tuple(size_list(8, 8 << 30, 4))
