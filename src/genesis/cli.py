"""The ``genesis`` command: one subcommand per workflow stage.

Each subcommand lives in ``genesis.commands.<name>`` and defines ``HELP``,
``add_arguments(parser)`` and ``run(args)``. Command modules import heavy libraries
(torch, SimpleITK, ...) inside ``run`` so that ``genesis --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from genesis import __version__
from genesis.errors import GenesisError

#: Subcommands in workflow order.
COMMANDS: tuple[str, ...] = (
    "synth",
    "fetch",
    "cubes",
    "pretrain",
    "prepare",
    "finetune",
    "evaluate",
    "aggregate",
    "tables",
    "figures",
    "provenance",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks (examples stay one command per line), and
    options show their default unless they are required or have none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.required
            or action.default in (None, argparse.SUPPRESS)
            or "%(default)" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genesis",
        description="Models Genesis: pretrain 3D models by image restoration, fine-tune "
        "them on target tasks and report the results. Each subcommand is one stage of the "
        "Snakemake workflow and can also be run on its own.",
    )
    parser.add_argument("--version", action="version", version=f"genesis {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"genesis.commands.{name}")
        child = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=HelpFormatter,
        )
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except GenesisError as error:
        # Bad input: one clear line naming the file or key, no traceback.
        print(f"genesis {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
