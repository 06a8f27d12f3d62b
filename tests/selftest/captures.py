"""The real captured nvidia-smi outputs of a 2× H100 NVLink node, and edited copies of them."""

import shutil
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "h100x2-nvlink"
UUID1 = "GPU-0595606e-cf87-68bc-dcd1-a66677557151"
NEW_UUID1 = "GPU-11111111-2222-3333-4444-555555555555"
_DRIVER_LINE = "Driver Version                                         : "

# one NVLink link of GPU 1 down, GPU 1 swapped for another board, the driver bumped (minor)
DRIFT_EDITS = {
    "nvidia-smi-nvlink-s.txt": [("Link 3: 26.562 GB/s", "Link 3: <inactive>", "GPU 1:"),
                                (UUID1, NEW_UUID1, None)],
    "nvidia-smi-q.txt": [(UUID1, NEW_UUID1, None),
                         (_DRIVER_LINE + "580.159.04", _DRIVER_LINE + "580.172.08", None)],
}


def edited_capture(tmp_path: Path, edits: dict) -> Path:
    """A copy of the fixture directory with text replacements per file: {file: [(old, new, where)]}
    where `where` is a marker after which the (first) replacement happens, or None."""
    target = tmp_path / "edited"
    shutil.copytree(FIXTURE, target)
    for name, replacements in edits.items():
        path = target / name
        content = path.read_text()
        for old, new, after in replacements:
            start = content.index(after) if after else 0
            assert old in content[start:], f"{old!r} not in {name}"
            content = content[:start] + content[start:].replace(old, new, 1 if after else -1)
        path.write_text(content)
    return target
