"""The memtest engine and `gpucert bench memtest` on the CPU: healthy memory reads back clean, and
corruption planted for real in the tested tensors (bit flips, a corrupted block, an address alias)
is found, counted exactly and located to the chunk, offset and bit."""

from __future__ import annotations

import json

import pytest

from gpucert.cli import main
from gpucert.physics import memtest
from gpucert.physics.memtest import as_int64, as_uint64, splitmix64

from .machine import without_gpu

MIB = 1 << 20
# 3 MiB + 5 words in 1 MiB chunks verified in 256 KiB slices: 4 chunks, the last one short, and
# slice and chunk boundaries inside the region, so global indices cross both
SIZE = 3 * MIB + 5 * 8
CHUNK = MIB
SLICE = 256 << 10
CHUNK_WORDS = CHUNK // 8
SLICE_WORDS = SLICE // 8


def run(**kwargs) -> memtest.MemtestResult:
    options = {"size_bytes": SIZE, "chunk_bytes": CHUNK, "slice_bytes": SLICE} | kwargs
    return memtest.run_memtest("cpu", **options)


def by_name(result: memtest.MemtestResult) -> dict[str, memtest.PatternResult]:
    return {p.name: p for p in result.patterns}


def flip(chunk, word: int, bit: int) -> None:
    """Flip one bit of one word of a real chunk tensor."""
    chunk[word] ^= as_int64(1 << bit)


def expected_word(name: str, index: int, seed: int = 0) -> int:
    """What the pattern `name` writes at global word `index`, from the definitions (unsigned)."""
    if name.startswith("walking-"):
        bit = 1 << int(name.rsplit("-b", 1)[1])
        return bit if name.startswith("walking-ones") else as_uint64(~bit)
    value = index if name.startswith("address") else splitmix64(seed, index)
    return as_uint64(~value) if name.endswith("-complement") else value


DEFAULT_NAMES = [p.name for p in memtest.expand()]


def test_healthy_memory_reads_back_clean_and_holds_each_pattern():
    seen = {}

    def peek(name, chunks):  # reads only: what the write really put in memory
        words = [(0, 0), (1, 0), (1, SLICE_WORDS - 1), (1, SLICE_WORDS), (3, 4)]
        seen[name] = [(c * CHUNK_WORDS + w, as_uint64(int(chunks[c][w]))) for c, w in words]

    result = run(corrupt=peek)
    assert result.status == "ok" and result.error is None and result.errors == 0
    assert [p.name for p in result.patterns] == DEFAULT_NAMES and len(DEFAULT_NAMES) == 2 * 8 + 2 + 2
    assert [c["bytes"] for c in result.chunks] == [CHUNK, CHUNK, CHUNK, 40]
    assert [c["address"] for c in result.chunks] == [0, CHUNK, 2 * CHUNK, 3 * CHUNK]
    assert result.bytes_tested == SIZE and result.errors_per_chunk == [0, 0, 0, 0]
    assert result.free_bytes is None and result.fraction_of_free is None  # no free-memory figure on the CPU
    for pattern in result.patterns:
        assert pattern.errors == 0 and pattern.located == [] and pattern.errors_per_chunk == [0, 0, 0, 0]
        assert pattern.bytes_written == pattern.bytes_read == SIZE
        assert pattern.gbps > 0
    assert result.bytes_moved == 2 * SIZE * len(DEFAULT_NAMES)
    assert result.gbps == pytest.approx(result.bytes_moved / result.seconds / 1e9) and result.gbps > 0
    for name in DEFAULT_NAMES:
        assert seen[name] == [(i, expected_word(name, i)) for i, _ in seen[name]], name
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["status"] == "ok" and len(as_json["patterns"]) == len(DEFAULT_NAMES)


def test_walking_bits_option_sets_the_passes():
    assert [p.name for p in memtest.expand(["walking"], [0, 63])] == [
        "walking-ones-b0", "walking-zeros-b0", "walking-ones-b63", "walking-zeros-b63"]
    assert len(memtest.expand(["walking"], range(64))) == 128
    values = {p.name: as_uint64(p.value) for p in memtest.expand(["walking"], [63])}
    assert values == {"walking-ones-b63": 1 << 63, "walking-zeros-b63": (1 << 63) - 1}


@pytest.mark.fault("memtest", "one bit flipped in the tested tensors after each pattern's write",
                   "each pattern counts exactly 1 error, located to its chunk, offset, address and bit")
def test_a_single_bit_flip_is_found_and_located_in_every_pattern():
    planted = {}  # pattern → (chunk, word, bit), a different place in each pattern

    def corrupt(name, chunks):
        i = len(planted)
        chunk, word = [(0, 0), (1, SLICE_WORDS - 1), (2, SLICE_WORDS), (3, 4), (2, CHUNK_WORDS - 1)][i % 5]
        bit = (i * 13) % 64 if i % 4 else 63
        planted[name] = (chunk, word, bit, chunks[chunk].data_ptr())
        flip(chunks[chunk], word, bit)

    result = run(corrupt=corrupt)
    assert result.status == "errors_found" and result.errors == len(DEFAULT_NAMES)
    for name, pattern in by_name(result).items():
        chunk, word, bit, pointer = planted[name]
        assert pattern.errors == 1, name
        assert pattern.errors_per_chunk == [int(c == chunk) for c in range(4)], name
        [error] = pattern.located
        index = chunk * CHUNK_WORDS + word
        expected = expected_word(name, index)
        actual = expected ^ (1 << bit)
        assert error == {
            "pattern": name, "pass": 1, "chunk": chunk, "offset": word * 8, "address": index * 8,
            "pointer": f"0x{pointer + word * 8:x}", "expected": f"0x{expected:016x}", "actual": f"0x{actual:016x}",
            "xor": f"0x{1 << bit:016x}", "flipped_bits": [bit],
            "to_one": [bit] if actual >> bit & 1 else [], "to_zero": [bit] if expected >> bit & 1 else [],
        }, name


@pytest.mark.fault("memtest", "a block of 1,000 words corrupted in one chunk, across a slice boundary",
                   "exactly 1,000 errors, all in that chunk; the first ones located in address order")
def test_a_corrupted_block_counts_exactly():
    first = SLICE_WORDS - 300  # the block spans two verify slices of chunk 2

    def corrupt(name, chunks):
        chunks[2][first:first + 1000] ^= 0x5A  # every word changed, whatever the pattern held

    result = run(patterns=["address", "random"], corrupt=corrupt, max_located=5)
    for pattern in result.patterns:
        assert pattern.errors == 1000 and pattern.errors_per_chunk == [0, 0, 1000, 0], pattern.name
        assert [e["offset"] for e in pattern.located] == [(first + i) * 8 for i in range(5)]
        assert all(e["flipped_bits"] == [1, 3, 4, 6] for e in pattern.located)
    assert result.errors == 4000 and result.errors_per_chunk == [0, 0, 4000, 0]


@pytest.mark.fault("memtest", "an address alias: one block of memory copied over another",
                   "the address and random patterns count every aliased word; walking ones/zeros cannot see it")
def test_address_in_address_catches_an_alias():
    words = 700

    def alias(name, chunks):  # as if chunk 1's first words decoded to chunk 0's cells
        chunks[1][:words] = chunks[0][:words]

    result = run(walking_bits=[0, 63], corrupt=alias)
    patterns = by_name(result)
    for name in ("walking-ones-b0", "walking-zeros-b0", "walking-ones-b63", "walking-zeros-b63"):
        assert patterns[name].errors == 0, name  # every word holds the same constant: an alias is invisible
    for name in ("address", "address-complement", "random", "random-complement"):
        assert patterns[name].errors == words and patterns[name].errors_per_chunk == [0, words, 0, 0], name
    error = patterns["address"].located[3]
    # the word at chunk 1 word 3 holds chunk 0 word 3's address: which cell it aliases, read off the value
    assert int(error["expected"], 16) == CHUNK_WORDS + 3 and int(error["actual"], 16) == 3
    assert error["address"] == (CHUNK_WORDS + 3) * 8


def test_random_pattern_is_reproducible_and_is_splitmix64():
    def words_of(seed):
        kept = {}
        run(patterns=["random"], seed=seed,
            corrupt=lambda name, chunks: kept.setdefault(name, [c.clone() for c in chunks]))
        return kept["random"]

    same = words_of(7)
    assert all(bool((a == b).all()) for a, b in zip(same, words_of(7)))
    other = words_of(8)
    differing = sum(int((a != b).sum()) for a, b in zip(same, other))
    assert differing > 0.999 * SIZE / 8
    # the published first outputs of SplitMix64 seeded with 0, then the device's words against the reference
    assert [splitmix64(0, 0), splitmix64(0, 1)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    for index in (0, 1, SLICE_WORDS, CHUNK_WORDS + 17, 3 * CHUNK_WORDS + 4):
        chunk, word = divmod(index, CHUNK_WORDS)
        assert as_uint64(int(same[chunk][word])) == splitmix64(7, index), index
    ones = sum(bin(as_uint64(int(w))).count("1") for w in same[0][:4096])
    assert 0.45 < ones / (4096 * 64) < 0.55  # random-looking: half the bits set


def test_an_exception_is_a_result_keeping_what_was_tested():
    def fail_third(name, chunks):
        if name == "walking-ones-b9":
            raise RuntimeError("CUDA error: uncorrectable ECC error encountered")

    result = run(corrupt=fail_third)
    assert result.status == "error" and "uncorrectable ECC error" in result.error
    assert [p.name for p in result.patterns] == ["walking-ones-b0", "walking-zeros-b0"]
    assert result.bytes_tested == SIZE and result.to_dict()["errors"] == 0


def test_passes_repeat_the_list():
    result = run(patterns=["address"], passes=2)
    assert [(p.name, p.pass_index) for p in result.patterns] == [
        ("address", 1), ("address-complement", 1), ("address", 2), ("address-complement", 2)]


def test_gpu_coverage_target_leaves_the_reserve():
    result = memtest.MemtestResult("cuda:0", {}, free_bytes=100 << 30, total_bytes=140 << 30)
    assert memtest._target_bytes(result, None, 0.9, 1 << 30) == 90 << 30
    assert memtest._target_bytes(result, 8 << 30, 0.9, 1 << 30) == 8 << 30   # --size caps the share
    assert memtest._target_bytes(result, None, 1.0, 1 << 30) == 99 << 30     # never into the reserve
    result.chunks = [{"bytes": 45 << 30}, {"bytes": 45 << 30}]
    assert (result.fraction_of_free, result.fraction_of_total) == (0.9, pytest.approx(90 / 140))


def test_an_out_of_memory_chunk_halves_then_ends_allocation(monkeypatch):
    import torch
    real_empty, budget = torch.empty, [9 * MIB]

    def empty(n, **kwargs):  # a device with 9 MiB to give: larger requests fail as cudaMalloc does
        if n * 8 > budget[0]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        budget[0] -= n * 8
        return real_empty(n, **kwargs)

    monkeypatch.setattr(memtest, "OOM_MIN_CHUNK_BYTES", MIB)
    monkeypatch.setattr(torch, "empty", empty)
    chunks, note = memtest._allocate("cpu", 12 * MIB, 4 * MIB)
    assert [c.numel() * 8 for c in chunks] == [4 * MIB, 4 * MIB, MIB]
    assert note.startswith("out of memory after 0.01 GiB of 0.01 GiB")


@pytest.mark.parametrize("kwargs,message", [
    ({"fraction": 0}, "fraction 0"), ({"fraction": 1.5}, "fraction 1.5"), ({"size_bytes": 0}, "size 0"),
    ({"size_bytes": None}, "size_bytes is required on the CPU"), ({"patterns": ["march"]}, "unknown pattern march"),
    ({"walking_bits": [64]}, "walking bits [64]"), ({"chunk_bytes": 8}, "chunk 8"),
])
def test_bad_parameters_raise_before_anything_runs(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(**kwargs)


# ---- the command --------------------------------------------------------------------------------

CLI = ["bench", "memtest", "--device", "cpu", "--size", "2M", "--chunk", "1M"]


def test_cli_table_on_cpu(capsys):
    assert main([*CLI, "--bits", "0,63"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# gpucert bench memtest on cpu (cpu): 2 MiB tested in 2 chunk(s), seed 0"
    assert lines[1].split() == ["pattern", "pass", "errors", "GB/s", "write", "s", "verify", "s"]
    assert [line.split()[0] for line in lines[2:10]] == [p.name for p in memtest.expand(walking_bits=[0, 63])]
    assert all(line.split()[2] == "0" for line in lines[2:10])
    assert lines[10].startswith("total: 0 mismatching words in 8 patterns") and lines[10].endswith("status ok")
    assert len(lines) == 11


def test_cli_json_on_cpu(capsys):
    assert main([*CLI, "--patterns", "address,random", "--seed", "3", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["errors"] == 0 and row["device"] == "cpu"
    assert row["bytes_tested"] == 2 * MIB and row["errors_per_chunk"] == [0, 0]
    assert [p["name"] for p in row["patterns"]] == ["address", "address-complement", "random", "random-complement"]
    assert row["params"]["seed"] == 3 and row["gbps"] > 0 and row["fraction_of_free"] is None


@pytest.mark.fault("memtest", "a bit flipped under `gpucert bench memtest` (the engine's test hook)",
                   "exit 1; the error counted, its chunk listed and the word located in the table")
def test_cli_exit_1_and_located_errors_when_memory_is_corrupted(capsys, monkeypatch):
    real = memtest.run_memtest

    def corrupted(device, **kwargs):
        return real(device, **kwargs, corrupt=lambda name, chunks: flip(chunks[1], 2, 5) if name == "address" else None)

    monkeypatch.setattr(memtest, "run_memtest", corrupted)
    assert main([*CLI, "--patterns", "address"]) == 1
    out = capsys.readouterr().out
    assert "total: 1 mismatching words in 2 patterns" in out and "status errors_found" in out
    assert "errors per chunk (chunk: words): 1: 1" in out
    located = [line for line in out.splitlines() if line.startswith("address ")][-1].split()
    index = CHUNK_WORDS + 2
    assert located[1:4] == ["1", "0x10", hex(index * 8)]
    assert located[5:] == [f"0x{index:016x}", f"0x{index ^ 32:016x}", "5"]


@pytest.mark.parametrize("argv,message", [
    (["--fraction", "0"], "--fraction 0: expected a share of free memory in (0, 1]"),
    (["--fraction", "1.5"], "--fraction 1.5: expected a share of free memory in (0, 1]"),
    (["--size", "0"], "--size '0': at least 4096 bytes"),
    (["--size", "12Q"], "--size '12Q': expected a byte count"),
    (["--patterns", "walking,march"], "unknown pattern march (valid: walking, address, random, all)"),
    (["--bits", "0,64"], "--bits '0,64': expected distinct bit positions 0-63"),
    (["--passes", "0"], "--passes 0: expected an integer >= 1"),
    (["--device", "tpu"], "--device 'tpu': expected cuda, cuda:N or cpu"),
])
@pytest.mark.fault("bad-input", "bad `gpucert bench memtest` arguments", "one line on stderr, exit 2")
def test_cli_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["bench", "memtest", "--device", "cpu", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("gpucert: error: ") and message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""


@without_gpu
def test_cli_cuda_device_without_a_gpu_says_so(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["bench", "memtest", "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda:0: no CUDA device" in err and err.count("\n") == 1
