"""`gpucert judge`: a past run judged again. Its metrics.json's figures, each with the interval the
run computed from all its samples, go through the session's own judging (Run.judge_check: the
profile's baselines, their between-run noise pooled as a run pools it, thresholds.yaml's rules)
against a baselines folder and a thresholds file as they are now. What a reviewed change to either
would make of the last run, before it is merged; no GPU needed, nothing written.

Not read: the nightly history's past runs (`--history-dir`), so a metric a night's run judged with
its history's noise may read differently here."""

from __future__ import annotations

import gzip
import json
import lzma
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gpucert import redaction
from gpucert.baselines import BaselineError
from gpucert.metrics import Metric
from gpucert.recorder import CheckResult
from gpucert.session import Run, RunOptions
from gpucert.thresholds import Thresholds, ThresholdsError
from gpucert.thresholds import load as load_thresholds

EXIT_FAILED = 1  # a figure fails now, as pytest's exit status for failed tests


class RunFileError(ValueError):
    """A metrics.json that cannot be judged again; the message is one line."""


@dataclass(frozen=True)
class Verdict:
    key: str
    before: str | None  # the run's own verdict (None: the run had none, e.g. an older file)
    after: str
    reason: str


def read_run(path: Path) -> dict:
    """A run's metrics.json, or one kept compressed (.gz, .xz), as the run wrote it."""
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such file") from None
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"{path}: not a metrics.json ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("checks"), list) or not isinstance(doc.get("profile"), str):
        raise RunFileError(f"{path}: not a metrics.json (no profile and checks)")
    return doc


def metric_from(record: dict) -> Metric:
    """One metric as the run recorded it. Its interval is the run's (`ci`, `ci_method`: from every
    sample, where metrics.json keeps at most 1,000), so the change's interval is the run's too."""
    value = record.get("value")
    ci = record.get("ci")
    return Metric(check=record["check"], family=record["family"], metric=record["metric"], unit=record.get("unit", ""),
                  value=float(value) if isinstance(value, (int, float)) else None, params=record.get("params") or {},
                  samples=list(record.get("samples") or []), direction=record.get("direction"),
                  peak=record.get("peak"), status=record.get("status") or "ok", error=record.get("error"),
                  nodeid=record.get("nodeid", ""), stat=record.get("stat"), method=record.get("method"),
                  given_ci=(min(ci), max(ci)) if ci and all(math.isfinite(c) for c in ci) else None,
                  # an older file without the field: the interval from the samples it keeps
                  given_ci_method=record["ci_method"] if "ci_method" in record else None)


def rejudge(run: dict, baselines_dir: Path, thresholds: Thresholds, profile: str | None = None) -> list[Verdict]:
    """Every metric of `run` judged against `baselines_dir` and `thresholds` (the run's profile
    unless `profile`). Raises BaselineError for a baselines folder that cannot be read."""
    # judging writes nothing: the report folder a Run needs is never used
    session = Run(RunOptions(baselines_dir=baselines_dir, report_dir=baselines_dir, thresholds=thresholds,
                             profile=profile or run["profile"]))
    verdicts = []
    for check in run["checks"]:
        records = check.get("metrics") or []
        try:
            result = CheckResult(check["nodeid"], check["check"], check["family"], check.get("params") or {},
                                 check.get("markers") or [])
            result.metrics = [metric_from(record) for record in records]
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFileError(f"a check of the run cannot be read ({type(exc).__name__}: {exc})") from None
        session.judge_check(result)
        verdicts += [Verdict(m.key, record.get("verdict"), m.judgement.verdict, m.judgement.reason)
                     for m, record in zip(result.metrics, records)]
    return verdicts


def register(subparsers) -> None:
    cmd = subparsers.add_parser("judge", help="judge a past run's metrics.json again against baselines and "
                                              "thresholds as they are now")
    cmd.add_argument("metrics", metavar="METRICS_JSON", help="a run's metrics.json (or .json.gz / .json.xz)")
    cmd.add_argument("--baselines-dir", default="baselines", help="the baselines folder to judge against")
    cmd.add_argument("--thresholds", default="thresholds.yaml", help="the thresholds file to judge with")
    cmd.add_argument("--profile", help="the profile to judge against (default: the run's)")
    cmd.add_argument("--json", action="store_true", help="print every metric's verdicts as JSON")
    cmd.set_defaults(run=run_judge)


def run_judge(args) -> int:
    """Prints the verdicts then and now and every metric whose verdict moved or fails now; exit 1
    when any fails now, 0 otherwise, 2 for bad input."""
    from gpucert.cli import CommandError
    baselines = Path(args.baselines_dir)
    if not baselines.is_dir():
        raise CommandError(f"--baselines-dir {baselines}: not a folder")
    try:
        run = read_run(Path(args.metrics))
        verdicts = rejudge(run, baselines, load_thresholds(Path(args.thresholds)), args.profile)
    except (RunFileError, BaselineError, ThresholdsError, OSError) as exc:
        raise CommandError(str(exc)) from None
    failed = any(v.after == "fail" for v in verdicts)
    if args.json:
        print(json.dumps(redaction.redact_obj([v.__dict__ for v in verdicts]), indent=1))
        return EXIT_FAILED if failed else 0
    then, now = Counter(v.before for v in verdicts), Counter(v.after for v in verdicts)
    print(f"{args.metrics}: {len(verdicts)} metric(s) of profile {args.profile or run['profile']} judged again "
          f"against {baselines} and {args.thresholds}")
    print(f"  verdicts then: {_counts(then)}")
    print(f"  verdicts now:  {_counts(now)}")
    for v in verdicts:
        if v.after != v.before or v.after == "fail":
            # redacted: a reason may quote a measurement's error text (a server's answer, a URL)
            print(redaction.redact(f"  {v.key}: {v.before or 'none'} -> {v.after}: {v.reason}"))
    return EXIT_FAILED if failed else 0


def _counts(counter: Counter) -> str:
    return ", ".join(f"{name or 'none'} {count}" for name, count in sorted(counter.items(), key=lambda kv: str(kv[0])))
