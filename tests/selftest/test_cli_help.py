"""`gpucert … --help`: every option of every subcommand (the emulator's included) has a help text
that states its default, or says the argument is required."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpucert import cli

REPO = Path(__file__).resolve().parents[2]


def _parsers(parser: argparse.ArgumentParser, name: str = "gpucert"):
    """(command line, parser) of the top level and every subcommand, depth first."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


PARSERS = dict(_parsers(cli.build_parser()))


def _squeezed(text: str) -> str:
    # argparse wraps help at spaces and after hyphens: compare without any whitespace
    return "".join(text.split())


def _default_forms(default) -> set[str]:
    if isinstance(default, float):
        return {f"{default:g}", str(default)}
    return {str(default)}


def test_every_subcommand_is_walked():
    assert {"gpucert snapshot", "gpucert bench gemm", "gpucert bench memory", "gpucert bench p2p",
            "gpucert bench nccl", "gpucert loadgen", "gpucert emulator", "gpucert monitor"} <= set(PARSERS)


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_says_its_default_in_help(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = PARSERS[command]
    rendered = _squeezed(parser.format_help())
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._SubParsersAction):
            problems += [f"{command} {choice.dest}: no help" for choice in action._choices_actions if not choice.help]
            continue
        if not action.help or action.help is argparse.SUPPRESS:
            problems.append(f"{name}: no help")
            continue
        text = formatter._expand_help(action)
        lowered = text.lower()
        if _squeezed(text) not in rendered:
            problems.append(f"{name}: its help is not in --help")
        if action.required and "required" not in lowered:
            problems.append(f"{name}: required, and its help does not say so")
        elif not action.required and "default" not in lowered and "required" not in lowered:
            problems.append(f"{name}: its help does not state the default ({action.default!r}): {text!r}")
        elif action.default not in (None, False, [], argparse.SUPPRESS) and "default" in lowered \
                and not any(form in text for form in _default_forms(action.default)):
            problems.append(f"{name}: the default {action.default!r} is not in its help: {text!r}")
    assert not problems, "\n".join(problems)


def test_help_is_printed_by_the_command(tmp_path):
    """The real `--help` of a nested subcommand and of the emulator: exit 0, defaults shown."""
    for args, expected in ((["bench", "nccl", "--help"], "(default: nccl)"),
                           (["emulator", "--help"], "(default: 127.0.0.1)"),
                           (["loadgen", "--help"], "GET /v1/models")):
        done = subprocess.run([sys.executable, "-m", "gpucert.cli", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "COLUMNS": "100"})
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert expected in " ".join(done.stdout.split()), done.stdout


def _gpucert_without(package: str, *argv: str) -> subprocess.CompletedProcess:
    """The gpucert command in a Python where `package` cannot be imported (sys.modules[name] =
    None makes every import of it raise ModuleNotFoundError, as on a node that lacks it)."""
    code = (f"import sys; sys.modules[{package!r}] = None; from gpucert.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=120)


def test_a_missing_package_of_one_engine_leaves_the_other_commands_usable():
    """Session 36: on a GPU node without the load generator's httptools, `gpucert bench gemm`
    died in a traceback before parsing, because the serving commands' module failed to import."""
    bench = _gpucert_without("httptools", "bench", "gemm", "--help")
    assert bench.returncode == 0 and "--sustain-s" in bench.stdout, bench.stderr
    loadgen = _gpucert_without("httptools", "loadgen", "--url", "http://127.0.0.1:9")
    assert loadgen.returncode == cli.EXIT_USAGE and "Traceback" not in loadgen.stderr
    lines = loadgen.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice: 'loadgen'" in lines[0]
    assert "not loaded: gpucert.serving needs the package 'httptools'" in lines[0]
