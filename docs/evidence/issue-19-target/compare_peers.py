"""Issue 19 item 2, side by side: gpucert's sweeps against the peers its users trust, on the same
GPUs in one session, from the files run-peers.sh leaves in DIR:

  nccl-tests-all_reduce.json   all_reduce_perf -J: out-of-place bus bandwidth per size
  gpucert-nccl.json            gpucert bench nccl --ops all_reduce --json
  p2p-sample.txt               cuda-samples' p2pBandwidthLatencyTest, its stdout
  gpucert-p2p.json             gpucert bench p2p --json

    python3 compare_peers.py DIR     (gpucert importable: run-peers.sh installs it)

Prints markdown tables (what is missing is named, not guessed) and exits 1 when gpucert's
all_reduce bus bandwidth falls below 97 % of nccl-tests' at any size of 256 MiB or more, the
issue's bar; 2 when there is nothing to compare (one GPU: only the peers' own figures)."""

import json
import sys
from pathlib import Path

from gpucert.physics.p2p_matrix import KINDS

BAR = 0.97
BAR_FROM_BYTES = 256 << 20
# the sample's matrix titles (without --p2p_read), under gpucert's keys for them
P2P_TITLES = {kind.key: kind.title for kind in KINDS}


def nccl_tests_rows(doc) -> dict[int, dict]:
    """Every result record of an nccl-tests JSON file (objects holding `size` and
    `out_of_place`), wherever the file nests them, by size."""
    found = {}
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "size" in node and isinstance(node.get("out_of_place"), dict):
                found[int(node["size"])] = node["out_of_place"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def sample_matrices(text: str) -> dict[str, list[list[float]]]:
    """The sample's matrices by gpucert's key: under each title, the header line, then one row
    per GPU (its index, then the values); a latency block's CPU rows that follow are left out."""
    lines = text.splitlines()
    out = {}
    for key, title in P2P_TITLES.items():
        if title not in lines:
            continue
        at = lines.index(title) + 2
        rows = []
        while at < len(lines) and lines[at].split() and lines[at].split()[0].isdigit():
            rows.append([float(v) for v in lines[at].split()[1:]])
            at += 1
        out[key] = rows
    return out


def nccl_table(peer: dict[int, dict], ours: dict | None) -> tuple[list[str], bool]:
    ours_by_size = {row["bytes"]: row for row in (ours or {}).get("rows", [])
                    if row.get("op") == "all_reduce" and row.get("status") == "ok"}
    lines = ["| size | nccl-tests busbw (GB/s) | #wrong | gpucert busbw (GB/s) | #wrong | gpucert / nccl-tests |",
             "| --- | --- | --- | --- | --- | --- |"]
    below = False
    for size in sorted(peer):
        theirs = peer[size]
        mine = ours_by_size.get(size)
        ratio = mine["busbw_gbps"] / theirs["bus_bw"] if mine and theirs.get("bus_bw") else None
        if ratio is not None and size >= BAR_FROM_BYTES and ratio < BAR:
            below = True
        lines.append(f"| {size:,} | {theirs['bus_bw']:.2f} | {theirs.get('nwrong')} | "
                     + (f"{mine['busbw_gbps']:.2f} | {mine['wrong']} | " if mine else "- | - | ")
                     + (f"{ratio:.1%}" + (" **below the bar**" if size >= BAR_FROM_BYTES and ratio < BAR else "")
                        if ratio is not None else "-") + " |")
    return lines, below


def p2p_table(sample: dict[str, list[list[float]]], ours: dict | None) -> list[str]:
    lines = ["| matrix | entry | p2pBandwidthLatencyTest | gpucert | gpucert / sample |", "| --- | --- | --- | --- | --- |"]
    matrices = (ours or {}).get("matrices", {})
    for key, rows in sample.items():
        mine = matrices.get(key, {}).get("values")
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                other = mine[i][j] if mine and i < len(mine) and j < len(mine[i]) else None
                ratio = f"{other / value:.1%}" if other is not None and value else "-"
                lines.append(f"| {key} | {i}→{j} | {value:.2f} | {other if other is not None else '-'} | {ratio} |")
    return lines


def load(path: Path):
    """A JSON file's content; None where there is none (a gpucert sweep that stopped with one line
    on a node of one GPU leaves its file empty)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(folder: Path) -> int:
    peer_nccl = load(folder / "nccl-tests-all_reduce.json")
    ours_nccl = load(folder / "gpucert-nccl.json")
    sample_txt = folder / "p2p-sample.txt"
    ours_p2p = load(folder / "gpucert-p2p.json")
    missing = [name for name, have in (("nccl-tests-all_reduce.json", peer_nccl), ("gpucert-nccl.json", ours_nccl),
                                       ("p2p-sample.txt", sample_txt.is_file()), ("gpucert-p2p.json", ours_p2p))
               if not have]
    if ours_nccl and ours_nccl.get("status") != "ok":
        missing.append(f"gpucert-nccl.json: status {ours_nccl.get('status')}: {ours_nccl.get('error')}")
    below = False
    if peer_nccl:
        print("## all_reduce, float, sum, out of place (nccl-tests: one process, -g N; gpucert: a process per GPU)\n")
        lines, below = nccl_table(nccl_tests_rows(peer_nccl), ours_nccl)
        print("\n".join(lines) + "\n")
    if sample_txt.is_file():
        print("## P2P matrices\n")
        print("\n".join(p2p_table(sample_matrices(sample_txt.read_text()), ours_p2p)) + "\n")
    for name in missing:
        print(f"missing: {name}")
    if below:
        print(f"FAIL: gpucert's all_reduce busbw below {BAR:.0%} of nccl-tests' at ≥ 256 MiB")
        return 1
    return 2 if not (ours_nccl and peer_nccl) else 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print("usage: compare_peers.py DIR (the folder run-peers.sh wrote)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
