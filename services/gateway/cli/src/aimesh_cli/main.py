"""Entry point of the ``aimesh`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its sub-parser(s) and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning the exit code) with
``parser.set_defaults(func=...)``. To add a group, write the module and add its name to
``COMMAND_MODULES`` below (one line).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, cast

COMMAND_MODULES: tuple[str, ...] = (
    "aimesh_cli.ingest",
    "aimesh_cli.search",
    "aimesh_cli.eval",
)
"""Modules whose ``register`` adds a command group; append one line per group."""


class _CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add this module's sub-parser(s)."""


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The parser with every command group of ``modules`` registered."""
    parser = argparse.ArgumentParser(
        prog="aimesh", description="aimesh: the command line of the open AI backend."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        module = cast(_CommandModule, importlib.import_module(name))
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the chosen command, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = cast(Callable[[argparse.Namespace], int] | None, getattr(args, "func", None))
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
