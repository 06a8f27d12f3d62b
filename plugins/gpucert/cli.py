"""`gpucert`: run one engine by hand. Thin on purpose: each engine module registers its own
subcommand (`register(subparsers)` setting `run=`), this file only dispatches and turns bad
input into one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from gpucert import __version__, redaction

# One module per subcommand; add "gpucert.physics.cli", "gpucert.serving.cli", ... here.
COMMAND_MODULES = ("gpucert.snapshot.cli", "gpucert.physics.cli", "gpucert.serving.cli", "gpucert.monitor.cli", "gpucert.forensics.cli",
                   "gpucert.rejudge")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class CommandError(Exception):
    """Bad input a command reports as `gpucert: error: <message>` (exit 2), never a traceback."""


class HelpFormatter(argparse.HelpFormatter):
    """`--help` states every option's default, so nobody has to read the source for it. A help
    text that already says its default (or says the option is required) is left as written — a
    default of None needs words ("every visible GPU"), never "(default: None)"; otherwise the
    default is appended: flags as off/on, numbers as %g. An option whose default is None and
    whose help does not explain it is caught by the self-test (test_cli_help.py)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        lowered = text.lower()
        if "default" in lowered or "required" in lowered or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.default is None or action.default == []:
            return text
        value = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
        return f"{text} (default: {value.replace('%', '%%')})"  # the help is %-expanded after this


class _Parser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; the suite promises one line. Every
    subcommand's parser is one of these (argparse makes subparsers of the parent's class), so
    each gets the formatter that shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    unloaded: tuple[str, ...] = ()  # the top parser's: command modules a missing package kept out

    def error(self, message: str):
        if self.unloaded and "invalid choice" in message:
            message = f"{message}; not loaded: {'; '.join(self.unloaded)}"
        raise CommandError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpucert", description="Certify GPU inference nodes: run one engine.")
    parser.add_argument("--version", action="version", version=f"gpucert {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    unloaded = []
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module).register(subparsers)
        except ModuleNotFoundError as exc:
            # one engine's missing package (a node with torch but not the load generator's
            # httptools) leaves every other command usable; a module of gpucert's own is a bug
            if (exc.name or "gpucert").split(".")[0] == "gpucert":
                raise
            unloaded.append(f"{module.removesuffix('.cli')} needs the package {exc.name!r}")
    parser.unloaded = tuple(unloaded)
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
