"""One small function per collective: which slices of the two preallocated buffers it uses, the
torch.distributed call it times, the values its inputs get and the result each rank must hold.

Data (for the check after the timed loop, on every size): rank r's input element i holds
((i + 3r) mod 17) − 8, small integers that any sum over up to 32 ranks keeps exact in float32,
bfloat16 and float16, and that differ between ranks and positions so a chunk from the wrong rank
or at the wrong offset is counted wrong. Outputs are poisoned with NaN first, so a collective that
writes nothing is counted wrong too.

All_reduce and reduce run in place: torch.distributed has no out-of-place form of either (NCCL's
in-place and out-of-place times are the same in nccl-tests); every other collective is
out-of-place. Their inputs change while the timed loop repeats them, which costs NCCL nothing, and
the check re-initializes the inputs and runs one more collective, as nccl-tests' check does.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import torch
import torch.distributed as dist

PERIOD = 17
ROOT = 0  # broadcast source and reduce destination, as nccl-tests' default -r 0
CHECK_CHUNK = 1 << 24  # elements per fill/compare step: bounded temporaries at 8 GiB buffers

# torch 2.13 renamed the single-tensor gathers; older builds (2.11 on the GPU nodes) only have these
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

Values = Callable[[torch.Tensor], torch.Tensor]  # int64 element positions → int64 values


def pattern(rank, index):
    """Input value of `rank` at element `index` (ints or int64 tensors)."""
    return (index + 3 * rank) % PERIOD - 8


def summed(nranks: int, offset: int = 0) -> Values:
    """Sum over all ranks of their inputs at index + offset: the expected reduction."""
    return lambda index: sum(pattern(r, index + offset) for r in range(nranks))


@dataclass
class Buffers:
    """The two flat buffers a rank allocates once for the largest size; every case slices them."""

    rank: int
    nranks: int
    inp: torch.Tensor
    out: torch.Tensor


@dataclass
class Case:
    """One collective at one size on one rank."""

    run: Callable[[], None]  # one call: what the timed loop repeats
    call: str  # the torch.distributed call, for the row's note
    inputs: list[tuple[torch.Tensor, Values]]
    result: torch.Tensor | None  # where this rank's result lands (None: it receives nothing)
    expected: Values | None = None
    in_place: bool = False

    def prepare(self) -> None:
        """Fill the inputs with their pattern and poison an out-of-place result with NaN."""
        for buf, values in self.inputs:
            _fill(buf, values)
        if self.result is not None and not any(self.result is buf for buf, _ in self.inputs):
            self.result.fill_(float("nan"))

    def count_wrong(self) -> int:
        """Elements of this rank's result that differ from the expected values."""
        if self.result is None:
            return 0
        wrong = torch.zeros((), dtype=torch.int64, device=self.result.device)
        for start in range(0, self.result.numel(), CHECK_CHUNK):
            chunk = self.result[start:start + CHECK_CHUNK]
            index = torch.arange(start, start + chunk.numel(), device=chunk.device)
            wrong += (chunk != self.expected(index).to(chunk.dtype)).sum()
        return int(wrong.item())

    def corrupt(self, elements: int) -> None:
        """Test hook: damage this rank's result the way a faulty link or kernel would."""
        if self.result is not None:
            self.result[:elements] += 1


def _fill(buf: torch.Tensor, values: Values) -> None:
    for start in range(0, buf.numel(), CHECK_CHUNK):
        chunk = buf[start:start + CHECK_CHUNK]
        index = torch.arange(start, start + chunk.numel(), device=chunk.device)
        chunk.copy_(values(index))


def own_pattern(rank: int) -> Values:
    return lambda index: pattern(rank, index)


def all_reduce(b: Buffers, count: int) -> Case:
    x = b.inp[:count]
    return Case(lambda: dist.all_reduce(x), "torch.distributed.all_reduce (in place)",
                [(x, own_pattern(b.rank))], x, summed(b.nranks), in_place=True)


def all_gather(b: Buffers, count: int) -> Case:
    """count = elements per rank; the output holds every rank's chunk in rank order."""
    x, y = b.inp[:count], b.out[:count * b.nranks]

    def expected(index):
        owner = index // count
        return pattern(owner, index - owner * count)

    return Case(lambda: _all_gather_single(y, x), f"torch.distributed.{_all_gather_single.__name__}",
                [(x, own_pattern(b.rank))], y, expected)


def reduce_scatter(b: Buffers, count: int) -> Case:
    """count = elements per rank; rank r gets the sum of everyone's r-th chunk."""
    x, y = b.inp[:count * b.nranks], b.out[:count]
    return Case(lambda: _reduce_scatter_single(y, x), f"torch.distributed.{_reduce_scatter_single.__name__}",
                [(x, own_pattern(b.rank))], y, summed(b.nranks, offset=b.rank * count))


def alltoall(b: Buffers, count: int) -> Case:
    """count = elements each rank sends to each peer; rank r's j-th output chunk is rank j's r-th
    input chunk."""
    x, y = b.inp[:count * b.nranks], b.out[:count * b.nranks]

    def expected(index):
        sender = index // count
        return pattern(sender, b.rank * count + index - sender * count)

    return Case(lambda: dist.all_to_all_single(y, x), "torch.distributed.all_to_all_single",
                [(x, own_pattern(b.rank))], y, expected)


def broadcast(b: Buffers, count: int) -> Case:
    """The root sends from its input buffer, the others receive into their output buffer."""
    if b.rank == ROOT:
        t = b.inp[:count]
        inputs = [(t, own_pattern(ROOT))]
    else:
        t, inputs = b.out[:count], []
    return Case(lambda: dist.broadcast(t, src=ROOT), f"torch.distributed.broadcast (root {ROOT})",
                inputs, t, own_pattern(ROOT))


def reduce(b: Buffers, count: int) -> Case:
    """Only the root's result is defined (nccl-tests checks the root only)."""
    x = b.inp[:count]
    return Case(lambda: dist.reduce(x, dst=ROOT), f"torch.distributed.reduce (root {ROOT}, in place)",
                [(x, own_pattern(b.rank))], x if b.rank == ROOT else None, summed(b.nranks), in_place=True)


def sendrecv(b: Buffers, count: int) -> Case:
    """A ring: rank r sends to r+1 and receives from r−1 at the same time (nccl-tests sendrecv)."""
    x, y = b.inp[:count], b.out[:count]
    to, frm = (b.rank + 1) % b.nranks, (b.rank - 1) % b.nranks

    def run():
        ops = [dist.P2POp(dist.isend, x, to), dist.P2POp(dist.irecv, y, frm)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()

    return Case(run, "torch.distributed.batch_isend_irecv (isend to r+1, irecv from r-1)",
                [(x, own_pattern(b.rank))], y, own_pattern(frm))


BUILDERS: dict[str, Callable[[Buffers, int], Case]] = {
    "all_reduce": all_reduce, "all_gather": all_gather, "reduce_scatter": reduce_scatter,
    "alltoall": alltoall, "broadcast": broadcast, "reduce": reduce, "sendrecv": sendrecv,
}
