"""`gpucert`: run one engine by hand. Thin on purpose: each engine module registers its own
subcommand (`register(subparsers)` setting `run=`), this file only dispatches and turns bad
input into one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from gpucert import __version__, redaction

# One module per subcommand; add "gpucert.physics.cli", "gpucert.serving.cli", ... here.
COMMAND_MODULES = ("gpucert.snapshot.cli", "gpucert.physics.cli", "gpucert.serving.cli", "gpucert.monitor.cli")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class CommandError(Exception):
    """Bad input a command reports as `gpucert: error: <message>` (exit 2), never a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; the suite promises one line."""

    def error(self, message: str):
        raise CommandError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpucert", description="Certify GPU inference nodes: run one engine.")
    parser.add_argument("--version", action="version", version=f"gpucert {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except CommandError as err:
        # redacted: a command's error may quote a server's answer or a URL with its password
        print(f"gpucert: error: {redaction.redact(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # a Ctrl-C the command did not turn into a result of its own (one that lands while a
        # sampler or a server is still starting): one line and the shell's exit status for SIGINT
        print("gpucert: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # `python -m gpucert.cli` runs this file as __main__, a second copy of the module; dispatch
    # through the importable one so commands raise the CommandError that main() catches.
    from gpucert.cli import main as _main

    sys.exit(_main())
