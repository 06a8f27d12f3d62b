"""The N×N matrices of p2pBandwidthLatencyTest, measured through p2p.py, and their text layout.

`sweep(devices, ...)` measures every ordered pair (i, j), diagonal included (a copy within the
device, as the sample does), for every kind below; `format_matrix` prints one matrix exactly as
the sample's printf calls do ("   D\\D" header, "%6d " column numbers, "%6.02f " values), and
`card_rows` gives the same matrix as dict rows for the report card's finding tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

from . import p2p
from .core import Result


@dataclass(frozen=True)
class MatrixKind:
    key: str            # also the metric-like name in --json output
    title: str          # the line p2pBandwidthLatencyTest prints above the matrix
    unit: str
    p2p: bool
    corner: str = "   D\\D"


# In the order p2pBandwidthLatencyTest prints them (without --p2p_read).
KINDS: tuple[MatrixKind, ...] = (
    MatrixKind("oneway_gbps_p2p_off", "Unidirectional P2P=Disabled Bandwidth Matrix (GB/s)", "GB/s", False),
    MatrixKind("oneway_gbps", "Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)", "GB/s", True),
    MatrixKind("bothway_gbps_p2p_off", "Bidirectional P2P=Disabled Bandwidth Matrix (GB/s)", "GB/s", False),
    MatrixKind("bothway_gbps", "Bidirectional P2P=Enabled Bandwidth Matrix (GB/s)", "GB/s", True),
    MatrixKind("latency_us_p2p_off", "P2P=Disabled Latency Matrix (us)", "us", False, "   GPU"),
    MatrixKind("latency_us", "P2P=Enabled Latency (P2P Writes) Matrix (us)", "us", True, "   GPU"),
)
KIND_BY_KEY = {kind.key: kind for kind in KINDS}
CONNECTIVITY_TITLE = "P2P Connectivity Matrix"


@dataclass
class SweepConfig:
    size: int = 1 << 30          # bytes per bandwidth copy
    latency_bytes: int = 4
    latency_copies: int = 100
    warmup: int = 2
    reps: int = 10
    max_time_s: float = 10.0     # per entry


@dataclass
class Sweep:
    """Every entry's Result per matrix kind, plus peer access; values derived on demand."""

    devices: list[str]
    config: SweepConfig
    access: list[list[bool]]
    results: dict[str, list[list[Result]]] = field(default_factory=dict)

    def value(self, key: str, i: int, j: int) -> float | None:
        result = self.results[key][i][j]
        if result.status != "ok":
            return None
        if KIND_BY_KEY[key].unit == "us":
            return result.median_s * 1e6 if result.median_s is not None else None
        return result.gbps

    def matrix(self, key: str) -> list[list[float | None]]:
        n = len(self.devices)
        return [[self.value(key, i, j) for j in range(n)] for i in range(n)]

    def failures(self) -> list[dict]:
        """Every entry that did not measure, with its error (nothing is dropped)."""
        return [{"matrix": key, "src": i, "dst": j, "status": r.status, "error": r.error}
                for key, grid in self.results.items() for i, row in enumerate(grid)
                for j, r in enumerate(row) if r.status != "ok"]

    def pair_rows(self, expectations: dict[tuple[int, int], p2p.Expectation] | None = None) -> list[dict]:
        """One row per ordered pair i ≠ j: every kind's value, access, link and peak."""
        rows = []
        n = len(self.devices)
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                expected = (expectations or {}).get((i, j))
                row = {"src": i, "dst": j, "link": expected.link if expected else None,
                       "p2p_access": self.access[i][j]}
                row.update({key: _round(self.value(key, i, j)) for key in self.results})
                peak = expected.peak_gbps if expected else None
                oneway = self.value("oneway_gbps", i, j) if "oneway_gbps" in self.results else None
                row["peak_gbps"] = _round(peak)
                row["pct_of_peak"] = _round(100 * oneway / peak) if oneway and peak else None
                rows.append(row)
        return rows

    def to_dict(self, expectations=None) -> dict:
        return {
            "devices": self.devices,
            "size_bytes": self.config.size,
            "latency_bytes": self.config.latency_bytes,
            "latency_copies": self.config.latency_copies,
            "pairs": self.pair_rows(expectations),
            "matrices": {key: {"title": KIND_BY_KEY[key].title, "unit": KIND_BY_KEY[key].unit,
                               "values": [[_round(v) for v in row] for row in self.matrix(key)]}
                         for key in self.results},
            "connectivity": [[int(a) for a in row] for row in self.access],
            "failures": self.failures(),
        }


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def measure_entry(kind: MatrixKind, src: str, dst: str, config: SweepConfig, *, diagonal: bool) -> Result:
    """One matrix entry. The diagonal is a copy within the device in both P2P modes (the sample
    copies device memory there whatever the mode); off the diagonal P2P off is staged via host."""
    use_p2p = kind.p2p or diagonal
    common = {"warmup": config.warmup, "reps": config.reps, "max_time_s": config.max_time_s}
    if kind.key.startswith("oneway"):
        return p2p.measure_oneway(src, dst, config.size, p2p=use_p2p, **common)
    if kind.key.startswith("bothway"):
        return p2p.measure_bothway(src, dst, config.size, p2p=use_p2p, **common)
    return p2p.measure_latency(src, dst, nbytes=config.latency_bytes, copies=config.latency_copies,
                               p2p=use_p2p, **common)


def sweep(devices: list[str], config: SweepConfig | None = None, kinds: tuple[MatrixKind, ...] = KINDS,
          progress: Callable[[str], None] | None = None) -> Sweep:
    """Measure every kind for every ordered pair of `devices` (indices are positions in the list,
    so ["cpu", "cpu"] sweeps a 2×2 matrix on the CPU)."""
    config = config or SweepConfig()
    n = len(devices)
    access = [[i == j or p2p.peer_access(devices[i], devices[j]) for j in range(n)] for i in range(n)]
    result = Sweep(list(devices), config, access)
    for kind in kinds:
        if progress:
            progress(kind.title)
        result.results[kind.key] = [[measure_entry(kind, devices[i], devices[j], config, diagonal=i == j)
                                     for j in range(n)] for i in range(n)]
    return result


# ---- layout -----------------------------------------------------------------------------------

def format_matrix(title: str, values: list[list[float | None]], corner: str = "   D\\D") -> str:
    """A matrix as p2pBandwidthLatencyTest prints it: title line, `corner` then "%6d " per
    column, then per row "%6d " and "%6.02f " per value (an entry that failed prints "   n/a ")."""
    lines = [title, corner + "".join(f"{j:6d} " for j in range(len(values)))]
    for i, row in enumerate(values):
        cells = "".join(f"{v:6.02f} " if v is not None else f"{'n/a':>6} " for v in row)
        lines.append(f"{i:6d} {cells}")
    return "\n".join(lines)


def format_connectivity(access: list[list[bool]]) -> str:
    """p2pBandwidthLatencyTest's "P2P Connectivity Matrix": "     D\\D", "%6d" columns, rows
    "%6d\\t" then "%6d" per entry (1: peer access possible; the diagonal is 1)."""
    lines = [CONNECTIVITY_TITLE, "     D\\D" + "".join(f"{j:6d}" for j in range(len(access)))]
    for i, row in enumerate(access):
        lines.append(f"{i:6d}\t" + "".join(f"{int(a):6d}" for a in row))
    return "\n".join(lines)


def format_sweep(result: Sweep) -> str:
    """The whole printout: connectivity, then every measured matrix in the sample's order."""
    blocks = [format_connectivity(result.access)]
    blocks += [format_matrix(KIND_BY_KEY[key].title, result.matrix(key), KIND_BY_KEY[key].corner)
               for key in result.results]
    return "\n".join(blocks)


def card_rows(values: list[list[float | None]], corner: str = "D\\D") -> list[dict]:
    """A matrix as finding rows for the card: {"D\\D": i, "0": v, "1": v, ...} per row, so the
    card's table of dict rows shows it as the sample prints it (values to 2 decimals)."""
    return [{corner: i, **{str(j): _round(v) for j, v in enumerate(row)}} for i, row in enumerate(values)]
