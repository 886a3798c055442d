"""The ``python -m core`` command line.

Each module in this package that defines ``register(subparsers)`` adds its subcommands;
a subcommand sets ``func(args) -> int`` with ``set_defaults``. Modules are discovered, so a
capability adds a command by adding a file here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from typing import Any


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))


def emit(payload: Any, as_json: bool, text: str) -> None:
    """``--json``: the payload for scripts; otherwise a short text for people."""
    if as_json:
        print_json(payload)
    else:
        print(text)


def positive_int(text: str) -> int:
    """argparse type for counts such as ``--limit``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class CliError(Exception):
    """A clear message for the user; the command exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="SynthLab: synthetic image datasets from diffusion models, and whether "
                    "they can enhance or replace a real training set.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``python -m core runs --json | head``): no traceback, and no
        # second one when Python flushes stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        from core.db.engine import DataFolderError

        if isinstance(exc, DataFolderError):
            print(f"error: {exc.strerror}", file=sys.stderr)
            return 2
        return _disk_full_or_raise(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only a full disk is turned into one line
        return _disk_full_or_raise(exc)


def _disk_full_or_raise(exc: BaseException) -> int:
    """A full disk anywhere (an image write, SQLite's "database or disk is full") is one
    clear line, not a traceback; anything else is re-raised as it is."""
    from core.store import is_disk_full

    if not is_disk_full(exc):
        raise exc
    print("error: the disk holding the data folder is full; free some space and run the "
          "command again", file=sys.stderr)
    return 2
