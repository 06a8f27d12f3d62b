"""`gpucert snapshot [--from DIR] [--json]` and `gpucert snapshot diff OLD.json NEW.json [--json]`.

Exit status: 0 ok / no drift, 1 drift (a change at --fail-on severity or above), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpucert.cli import CommandError

from . import collect, explain, summary
from .compare import SEVERITIES, counts
from .schema import SnapshotError

EXIT_OK, EXIT_DRIFT = 0, 1
_VALUE_WIDTH = 60


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "snapshot", help="what is installed and how the GPUs are wired; diff two snapshots",
        description="Take a stack snapshot (live, or from captured nvidia-smi outputs), or "
                    "compare two saved snapshots: `gpucert snapshot diff OLD.json NEW.json`.")
    parser.add_argument("action", nargs="?", choices=("diff",),
                        help="diff: compare two snapshot JSON files (default: none, take a snapshot)")
    parser.add_argument("files", nargs="*", metavar="SNAPSHOT.json",
                        help="with diff: the old and the new snapshot (required with diff)")
    parser.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="read captured nvidia-smi outputs from DIR instead of this machine "
                             "(default: this machine)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--fail-on", choices=SEVERITIES, default="info",
                        help="with diff: lowest severity that counts as drift (default: info, "
                             "i.e. any change)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.action == "diff":
        if len(args.files) != 2:
            raise CommandError("snapshot diff needs exactly two files: OLD.json NEW.json")
        if args.from_dir:
            raise CommandError("snapshot diff compares saved files; --from does not apply")
        return _diff(*args.files, as_json=args.json, fail_on=args.fail_on)
    if args.files:
        raise CommandError(f"unexpected argument {args.files[0]!r} (did you mean "
                           "`gpucert snapshot diff OLD.json NEW.json`?)")
    try:
        snapshot = collect(from_dir=args.from_dir)
    except SnapshotError as err:
        raise CommandError(str(err)) from err
    if args.json:
        print(json.dumps(snapshot, indent=2))
    else:
        _print_rows(summary(snapshot))
    return EXIT_OK


def _diff(old_path: str, new_path: str, as_json: bool, fail_on: str) -> int:
    old, new = _load(old_path), _load(new_path)
    try:
        changes = explain(old, new)
    except SnapshotError as err:
        raise CommandError(str(err)) from err
    tally = counts(changes)
    if as_json:
        print(json.dumps({"changes": changes, "counts": tally}, indent=2))
    elif not changes:
        print("no drift: the stable fields are identical")
    else:
        _print_changes(changes, tally)
    threshold = SEVERITIES.index(fail_on)
    drifted = any(SEVERITIES.index(c["severity"]) <= threshold for c in changes)
    return EXIT_DRIFT if drifted else EXIT_OK


def _load(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise CommandError(f"cannot read {path}: {err.strerror or err}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CommandError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "schema_version" not in data:
        raise CommandError(f"{path} is not a gpucert snapshot (no schema_version)")
    return data


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def _print_changes(changes: list[dict], tally: dict) -> None:
    path_width = max(len(c["path"]) for c in changes)
    for change in changes:
        print(f"{change['severity']:<8}  {change['path']:<{path_width}}  "
              f"{_show(change['old'])} → {_show(change['new'])}  ({change['reason']})")
    print(f"{len(changes)} change(s): " + ", ".join(f"{n} {s}" for s, n in tally.items()))


def _show(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _VALUE_WIDTH else text[:_VALUE_WIDTH - 1] + "…"
