"""Memory integrity of one device: a memtest of GPU memory (HBM) in torch, as DCGM diagnostic's
memtest plugin and cuda_memtest do it — patterns written over most of the free memory, read back
and compared on the device, every mismatching word counted and the first ones located.

What is tested
- The region: on a GPU, 1 GiB chunks (`chunk_bytes`) of 64-bit words allocated until `fraction`
  (default 0.90) of the free memory that `torch.cuda.mem_get_info` reports at the start is held,
  never closer than a reserve (512 MiB plus the verify scratch, ~136 MiB) to the free figure, so
  the allocator and the driver keep room to work. Memory other processes hold is not tested. A
  chunk that fails with out-of-memory is retried at half the size down to 64 MiB, then allocation
  stops and what was allocated is tested; the result reports the bytes tested and that share of
  the free and of the total memory. `size_bytes` caps the region (on the CPU it is the region:
  the self-tests' memory, no free-memory figure). Chunks are numbered in allocation order; their
  concatenation is "the region": a word's global index is its byte address in the region / 8.
- The patterns, each one pass that writes the whole region, then verifies the whole region:
  - walking: for each bit b of `walking_bits`, every word = 1 << b ("walking-ones-b<b>"), then
    every word = ~(1 << b) ("walking-zeros-b<b>"). Default b = 0, 9, 18, 27, 36, 45, 54, 63: one
    bit in each byte lane, at each position 0..7 within a byte once, so 16 passes instead of 128
    (`walking_bits` = range(64) runs them all). Catches bits stuck at 0 or 1, and lanes that
    couple.
  - address: every word = its own global index ("address"), then its complement
    ("address-complement"). Catches address-line faults — two addresses that decode to the same
    cells (an alias), a row or column written in the wrong place — which every constant pattern
    misses, since an aliased word then holds the same constant.
  - random: word i = the i-th output of splitmix64 seeded with `seed` (state = seed + (i + 1) ×
    0x9E3779B97F4A7C15, then splitmix64's xor-shift-multiply mix; 64-bit wraparound), then its
    complement ("random", "random-complement"). Data-dependent faults; the pattern is a function
    of (seed, index), generated on the device with torch integer ops, so verify recomputes it —
    no copy is stored and nothing crosses to the host. Same seed, same words.
  `passes` (default 1) repeats the whole list (a soak).
- Verification: on the device and vectorized, slice by slice (64 MiB; on the CPU 4 MiB): the
  expected words are generated into a scratch slice (a constant is compared as a scalar), the
  region's words are compared with them into a mismatch mask, and its true entries are counted
  per slice with torch ops; the counts stay on the device until the pattern ends (one
  synchronization per pass).
- Errors: for each pattern the number of mismatching words, in all and per chunk (a bad region
  shows as a cluster), and the first `max_located` (default 32) located: chunk index, byte offset
  in the chunk, byte address in the region, device pointer (data_ptr() + offset, to cross-reference
  with driver logs), expected and actual word, their XOR, the bits that flipped and in which
  direction. Only the offending words are copied to the host, found on a second read of the slices
  whose count is not 0 (a transient read error counted once may not be there to locate).
- Throughput: per pattern, bytes written (the region) + bytes read (the region, by the verify)
  over the seconds of the write and of the verify (perf_counter, the device synchronized around
  each), and the whole test's GB/s = Σ bytes / Σ seconds (1e9 B/s). These are pattern bytes: the
  scratch traffic of generating expected words is not counted, so the address and random passes
  read below the walking ones; `gpucert bench memory` is the bandwidth benchmark.
- Status: "ok" (every count 0), "errors_found" (a mismatch), "error" (an exception: a CUDA error
  such as an uncorrectable ECC error, an allocation that failed outright — the patterns finished
  before it are kept, with their counts).
- What it cannot see: with ECC on (the default of datacenter GPUs' HBM), a single-bit error is
  corrected before torch reads it and an uncorrectable one raises a CUDA error in the process
  (status "error"); NVML's ECC counters and remapped rows, read before and after, are the other
  half. Mismatches seen here are what ECC let through — address and logic faults — or, on a card
  whose ECC is off, every error.

Test hook: `corrupt(pattern_name, chunks)` is called after each pattern's write and before its
verify with the real chunk tensors (1-D int64); the self-tests flip bits in them and check that
verify finds exactly those.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..phases import phase
from .core import is_cuda, synchronize

WORD_BYTES = 8  # every pattern works on 64-bit words (int64 tensors)
MASK64 = (1 << 64) - 1
PATTERN_GROUPS = ("walking", "address", "random")
DEFAULT_WALKING_BITS = tuple(range(0, 64, 9))  # 0, 9, ..., 63: each byte lane, each in-byte position once
DEFAULT_FRACTION = 0.90
CHUNK_BYTES = 1 << 30
MIN_CHUNK_BYTES = 4096
OOM_MIN_CHUNK_BYTES = 64 << 20  # below this, halving after an OOM gains too little to go on
RESERVE_BYTES = 512 << 20       # never allocated: room for the allocator, cuBLAS/driver workspaces
# Verify slices: large on a GPU so a kernel outlasts its launch; small on the CPU so the scratch
# of the generated words stays in cache.
SLICE_BYTES = {"cuda": 64 << 20, "cpu": 4 << 20}
MAX_LOCATED = 32
STATUSES = ("ok", "errors_found", "error")

# splitmix64 (Steele, Lea, Flood 2014): the increment and the two mix multipliers
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def as_int64(value: int) -> int:
    """An unsigned 64-bit value as the signed int64 torch stores (two's complement)."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def as_uint64(value: int) -> int:
    return value & MASK64


def splitmix64(seed: int, index: int) -> int:
    """Reference (plain Python) of the random pattern's word `index`: what the device computes."""
    z = (seed + (index + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


# ---- patterns -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pattern:
    """One write-and-verify pass. kind: "fill" (every word = value), "address" or "random"."""
    name: str
    kind: str
    value: int = 0  # fill: the word, as a signed int64
    invert: bool = False


def expand(groups: Sequence[str] = PATTERN_GROUPS, walking_bits: Sequence[int] = DEFAULT_WALKING_BITS) -> list[Pattern]:
    """The passes of the named groups, in the order given."""
    passes: list[Pattern] = []
    for group in groups:
        if group == "walking":
            for bit in walking_bits:
                passes.append(Pattern(f"walking-ones-b{bit}", "fill", as_int64(1 << bit)))
                passes.append(Pattern(f"walking-zeros-b{bit}", "fill", as_int64(~(1 << bit))))
        else:
            passes.append(Pattern(group, group))
            passes.append(Pattern(f"{group}-complement", group, invert=True))
    return passes


def _xorshift_right(words, shift: int, tmp) -> None:
    """words ^= words >>> shift (logical). torch's >> on int64 is arithmetic (copies the sign bit),
    so the shifted value is masked to its low 64 - shift bits."""
    import torch
    torch.bitwise_right_shift(words, shift, out=tmp)
    tmp.bitwise_and_(MASK64 >> shift)
    words.bitwise_xor_(tmp)


def generate(pattern: Pattern, out, start: int, seed: int, tmp) -> None:
    """Write the expected words of global indices start .. start + len(out) into `out` (a 1-D
    int64 tensor, a slice of a chunk or the scratch), on its device. `tmp`: scratch of out's size.
    int64 multiply and add wrap around modulo 2**64 on the CPU and on CUDA: unsigned arithmetic."""
    import torch
    if pattern.kind == "fill":
        out.fill_(pattern.value)
        return
    torch.arange(start, start + out.numel(), out=out)  # the global index, written in place
    if pattern.kind == "random":
        out.mul_(as_int64(GOLDEN)).add_(as_int64(seed + GOLDEN))  # splitmix64 state after index + 1 steps
        _xorshift_right(out, 30, tmp)
        out.mul_(as_int64(MIX1))
        _xorshift_right(out, 27, tmp)
        out.mul_(as_int64(MIX2))
        _xorshift_right(out, 31, tmp)
    if pattern.invert:
        out.bitwise_not_()


# ---- results ------------------------------------------------------------------------------------

@dataclass
class PatternResult:
    name: str
    pass_index: int
    errors: int = 0
    errors_per_chunk: list[int] = field(default_factory=list)
    located: list[dict[str, Any]] = field(default_factory=list)
    bytes_written: int = 0
    bytes_read: int = 0
    write_s: float = 0.0
    verify_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.write_s + self.verify_s

    @property
    def gbps(self) -> float | None:
        return (self.bytes_written + self.bytes_read) / self.seconds / 1e9 if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pass": self.pass_index, "errors": self.errors,
                "errors_per_chunk": self.errors_per_chunk, "located": self.located,
                "bytes_written": self.bytes_written, "bytes_read": self.bytes_read,
                "write_s": self.write_s, "verify_s": self.verify_s, "gbps": self.gbps}


@dataclass
class MemtestResult:
    device: str
    params: dict[str, Any]
    status: str = "ok"
    error: str | None = None
    note: str | None = None
    free_bytes: int | None = None   # CUDA: free memory at the start (mem_get_info); CPU: None
    total_bytes: int | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)  # index, bytes, address, pointer
    patterns: list[PatternResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def bytes_tested(self) -> int:
        return sum(chunk["bytes"] for chunk in self.chunks)

    @property
    def fraction_of_free(self) -> float | None:
        return self.bytes_tested / self.free_bytes if self.free_bytes else None

    @property
    def fraction_of_total(self) -> float | None:
        return self.bytes_tested / self.total_bytes if self.total_bytes else None

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.patterns)

    @property
    def errors_per_chunk(self) -> list[int]:
        totals = [0] * len(self.chunks)
        for pattern in self.patterns:
            for index, count in enumerate(pattern.errors_per_chunk):
                totals[index] += count
        return totals

    @property
    def bytes_moved(self) -> int:
        return sum(p.bytes_written + p.bytes_read for p in self.patterns)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.patterns)

    @property
    def gbps(self) -> float | None:
        return self.bytes_moved / self.seconds / 1e9 if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "params": self.params, "status": self.status, "error": self.error,
            "note": self.note, "bytes_tested": self.bytes_tested, "free_bytes": self.free_bytes,
            "total_bytes": self.total_bytes, "fraction_of_free": self.fraction_of_free,
            "fraction_of_total": self.fraction_of_total, "chunks": self.chunks, "errors": self.errors,
            "errors_per_chunk": self.errors_per_chunk, "bytes_moved": self.bytes_moved,
            "seconds": self.seconds, "gbps": self.gbps, "wall_s": self.wall_s,
            "patterns": [p.to_dict() for p in self.patterns],
        }


# ---- the region ---------------------------------------------------------------------------------

@dataclass
class _Scratch:
    """Verify's working memory, allocated before the region so it comes out of the reserve."""
    expected: Any
    tmp: Any
    mask: Any


def _scratch(device: str, slice_words: int) -> _Scratch:
    import torch
    return _Scratch(torch.empty(slice_words, dtype=torch.int64, device=device),
                    torch.empty(slice_words, dtype=torch.int64, device=device),
                    torch.empty(slice_words, dtype=torch.bool, device=device))


def _target_bytes(result: MemtestResult, size_bytes: int | None, fraction: float, reserve: int) -> int:
    """How much to allocate: on CUDA fraction × free (capped by size_bytes), never into the reserve."""
    if result.free_bytes is None:
        return int(size_bytes or 0)
    target = int(result.free_bytes * fraction)
    if size_bytes is not None:
        target = min(target, size_bytes)
    return max(0, min(target, result.free_bytes - reserve))


def _allocate(device: str, target: int, chunk_bytes: int) -> tuple[list, str | None]:
    """Chunks of up to chunk_bytes until `target` bytes are held. A CUDA out-of-memory halves the
    chunk (fragmentation, another process allocating meanwhile) and ends allocation below
    OOM_MIN_CHUNK_BYTES: the region tested is then smaller, and the note says so."""
    import torch
    chunks: list = []
    held, size = 0, chunk_bytes
    while target - held >= WORD_BYTES:
        want = min(size, target - held) // WORD_BYTES
        try:
            chunks.append(torch.empty(want, dtype=torch.int64, device=device))
            held += want * WORD_BYTES
        except torch.cuda.OutOfMemoryError:
            if size // 2 < OOM_MIN_CHUNK_BYTES:
                return chunks, (f"out of memory after {held / (1 << 30):.2f} GiB of {target / (1 << 30):.2f} GiB: "
                                "tested what was allocated")
            size //= 2
    return chunks, None


def _chunk_table(chunks: list) -> list[dict[str, Any]]:
    table, address = [], 0
    for index, chunk in enumerate(chunks):
        nbytes = chunk.numel() * WORD_BYTES
        table.append({"index": index, "bytes": nbytes, "address": address, "pointer": f"0x{chunk.data_ptr():x}"})
        address += nbytes
    return table


# ---- one pass -----------------------------------------------------------------------------------

def _slices(chunk, slice_words: int):
    """(slice index, first word, view) over a chunk."""
    for k, first in enumerate(range(0, chunk.numel(), slice_words)):
        yield k, first, chunk[first:first + slice_words]


def _write(pattern: Pattern, chunks: list, starts: list[int], seed: int, scratch: _Scratch) -> None:
    slice_words = scratch.tmp.numel()
    for chunk, start in zip(chunks, starts):
        if pattern.kind == "fill":
            chunk.fill_(pattern.value)  # one kernel per chunk: no generated words to hold
            continue
        for _, first, view in _slices(chunk, slice_words):
            generate(pattern, view, start + first, seed, scratch.tmp[:view.numel()])


def _mismatches(pattern: Pattern, view, start: int, seed: int, scratch: _Scratch):
    """The mismatch mask of one slice (a view of the scratch) and the expected words compared."""
    import torch
    n = view.numel()
    mask = scratch.mask[:n]
    if pattern.kind == "fill":
        torch.ne(view, pattern.value, out=mask)
        return mask, None
    expected = scratch.expected[:n]
    generate(pattern, expected, start, seed, scratch.tmp[:n])
    torch.ne(view, expected, out=mask)
    return mask, expected


def _count(pattern: Pattern, chunks: list, starts: list[int], seed: int, scratch: _Scratch, counts) -> None:
    """Mismatching words per (chunk, slice) into `counts`, on the device: no synchronization."""
    import torch
    slice_words = scratch.tmp.numel()
    for c, (chunk, start) in enumerate(zip(chunks, starts)):
        for k, first, view in _slices(chunk, slice_words):
            mask, _ = _mismatches(pattern, view, start + first, seed, scratch)
            counts[c, k] = torch.count_nonzero(mask)


def _located(pattern: PatternResult, c: int, chunk_info: dict, word: int, expected: int, actual: int) -> dict[str, Any]:
    offset = word * WORD_BYTES
    flipped = as_uint64(expected ^ actual)
    bits = [b for b in range(64) if flipped >> b & 1]
    return {
        "pattern": pattern.name, "pass": pattern.pass_index, "chunk": c, "offset": offset,
        "address": chunk_info["address"] + offset,
        "pointer": f"0x{int(chunk_info['pointer'], 16) + offset:x}",
        "expected": f"0x{as_uint64(expected):016x}", "actual": f"0x{as_uint64(actual):016x}",
        "xor": f"0x{flipped:016x}", "flipped_bits": bits,
        "to_one": [b for b in bits if actual >> b & 1], "to_zero": [b for b in bits if expected >> b & 1],
    }


def _locate(pattern: Pattern, found: PatternResult, chunks: list, starts: list[int], table: list[dict],
            seed: int, scratch: _Scratch, counts: list[list[int]], limit: int) -> None:
    """Re-read the slices whose count is not 0 and copy their first offending words to the host."""
    import torch
    slice_words = scratch.tmp.numel()
    for c, (chunk, start) in enumerate(zip(chunks, starts)):
        for k, first, view in _slices(chunk, slice_words):
            if len(found.located) >= limit:
                return
            if not counts[c][k]:
                continue
            mask, expected = _mismatches(pattern, view, start + first, seed, scratch)
            where = torch.nonzero(mask).flatten()[:limit - len(found.located)]
            actual = view[where].tolist()
            wanted = expected[where].tolist() if expected is not None else [pattern.value] * len(actual)
            for word, exp, act in zip(where.tolist(), wanted, actual):
                found.located.append(_located(found, c, table[c], first + word, exp, act))


def _run_pattern(pattern: Pattern, pass_index: int, device: str, chunks: list, starts: list[int],
                 table: list[dict], seed: int, scratch: _Scratch, max_located: int,
                 corrupt: Callable[[str, list], None] | None) -> PatternResult:
    import torch
    region = sum(chunk["bytes"] for chunk in table)
    result = PatternResult(pattern.name, pass_index, bytes_written=region, bytes_read=region)
    slices = max(-(-chunk.numel() // scratch.tmp.numel()) for chunk in chunks)
    counts = torch.zeros((len(chunks), slices), dtype=torch.int64, device=device)
    with phase(f"memtest[{pattern.name}]"):
        synchronize(device)
        t0 = time.perf_counter()
        _write(pattern, chunks, starts, seed, scratch)
        synchronize(device)
        result.write_s = time.perf_counter() - t0
        if corrupt is not None:
            corrupt(pattern.name, list(chunks))  # the test hook: untimed, between write and verify
            synchronize(device)
        t0 = time.perf_counter()
        _count(pattern, chunks, starts, seed, scratch, counts)
        per_slice = counts.cpu().tolist()  # the pass's one synchronization
        result.verify_s = time.perf_counter() - t0
    result.errors_per_chunk = [sum(row) for row in per_slice]
    result.errors = sum(result.errors_per_chunk)
    if result.errors and max_located:
        _locate(pattern, result, chunks, starts, table, seed, scratch, per_slice, max_located)
    return result


# ---- the test -----------------------------------------------------------------------------------

def check_params(device: str, *, size_bytes: int | None, fraction: float, chunk_bytes: int,
                 patterns: Sequence[str], walking_bits: Sequence[int], passes: int, seed: int,
                 max_located: int) -> None:
    """ValueError for input that cannot run (the CLI's bad input); nothing is allocated."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction:g}: expected a share of free memory in (0, 1]")
    if size_bytes is None and not is_cuda(device):
        raise ValueError("size_bytes is required on the CPU (there is no free-memory figure to take a share of)")
    if size_bytes is not None and size_bytes < WORD_BYTES:
        raise ValueError(f"size {size_bytes}: at least one {WORD_BYTES}-byte word")
    if chunk_bytes < MIN_CHUNK_BYTES:
        raise ValueError(f"chunk {chunk_bytes}: at least {MIN_CHUNK_BYTES} bytes")
    unknown = [p for p in patterns if p not in PATTERN_GROUPS]
    if unknown or not patterns:
        raise ValueError(f"unknown pattern {', '.join(unknown) or repr(list(patterns))} (valid: {', '.join(PATTERN_GROUPS)})")
    if "walking" in patterns and (not walking_bits or any(not 0 <= b < 64 for b in walking_bits)):
        raise ValueError(f"walking bits {list(walking_bits)}: expected bit positions 0..63")
    if passes < 1 or seed < 0 or max_located < 0:
        raise ValueError("passes must be >= 1, seed and max_located >= 0")


def run_memtest(device: str = "cpu", *, size_bytes: int | None = None, fraction: float = DEFAULT_FRACTION,
                chunk_bytes: int = CHUNK_BYTES, patterns: Sequence[str] = PATTERN_GROUPS,
                walking_bits: Sequence[int] = DEFAULT_WALKING_BITS, passes: int = 1, seed: int = 0,
                max_located: int = MAX_LOCATED, slice_bytes: int | None = None,
                reserve_bytes: int = RESERVE_BYTES,
                corrupt: Callable[[str, list], None] | None = None) -> MemtestResult:
    """Write and verify every pattern over the region (module docstring). Raises ValueError for
    bad parameters only; any failure while testing is the result's status "error", with the
    patterns finished before it."""
    check_params(device, size_bytes=size_bytes, fraction=fraction, chunk_bytes=chunk_bytes, patterns=patterns,
                 walking_bits=walking_bits, passes=passes, seed=seed, max_located=max_located)
    slice_bytes = slice_bytes or SLICE_BYTES["cuda" if is_cuda(device) else "cpu"]
    slice_words = max(1, min(slice_bytes, chunk_bytes) // WORD_BYTES)
    params = {"size_bytes": size_bytes, "fraction": fraction if is_cuda(device) else None,
              "chunk_bytes": chunk_bytes, "patterns": list(patterns), "walking_bits": list(walking_bits),
              "passes": passes, "seed": seed, "max_located": max_located, "slice_bytes": slice_words * WORD_BYTES}
    result = MemtestResult(str(device), params)
    started = time.perf_counter()
    chunks: list = []
    try:
        import torch
        if is_cuda(device):
            torch.cuda.empty_cache()  # this process's cached blocks count as free for the test
            result.free_bytes, result.total_bytes = torch.cuda.mem_get_info(torch.device(device))
        scratch = _scratch(device, slice_words)
        reserve = reserve_bytes + slice_words * (2 * WORD_BYTES + 1)
        target = _target_bytes(result, size_bytes, fraction, reserve)
        chunks, result.note = _allocate(device, target, chunk_bytes)
        if not chunks:
            raise MemoryError(f"no memory could be allocated for the test (target {target} bytes)")
        result.chunks = _chunk_table(chunks)
        for chunk in chunks:
            # first touch outside the timing: on the CPU it faults the pages in, which would
            # otherwise be charged to the first pattern's write
            chunk.zero_()
        starts = [chunk["address"] // WORD_BYTES for chunk in result.chunks]
        for pass_index in range(1, passes + 1):
            for pattern in expand(patterns, walking_bits):
                result.patterns.append(_run_pattern(pattern, pass_index, device, chunks, starts, result.chunks,
                                                    seed, scratch, max_located, corrupt))
        result.status = "errors_found" if result.errors else "ok"
    except Exception as exc:  # noqa: BLE001 — a failure is a result: keep the patterns finished so far
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}".strip()
    finally:
        chunks = scratch = None  # noqa: F841 — drop the region before the cache is emptied
        if is_cuda(device):
            try:
                import torch
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 — after a sticky CUDA error this raises too; the result stands
                pass
        result.wall_s = time.perf_counter() - started
    return result
