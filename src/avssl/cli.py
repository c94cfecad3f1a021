"""The ``avssl`` command line: ``avssl <command> [options]``.

Each command lives in ``avssl.commands.<name>`` and provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run``
so that ``avssl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from avssl import __version__
from avssl.commands import convert, demo, localize, prepare, score, synth
from avssl.commands import eval as eval_command
from avssl.commands import train as train_command

COMMANDS = {
    "demo": demo,
    "synth": synth,
    "prepare": prepare,
    "score": score,
    "convert": convert,
    "localize": localize,
    "train": train_command,
    "eval": eval_command,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avssl",
        description="Self-supervised audio-visual learning: SSL-TIE sound localisation and "
        "EquiAV representation learning. Run `avssl <command> --help` for details.",
    )
    parser.add_argument("--version", action="version", version=f"avssl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or module.HELP).strip()
        p = sub.add_parser(
            name, help=module.HELP, description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow the options (`avssl train P --out D k=v`): argparse cannot
    # intermix positionals with subcommands, so the leftovers that look like overrides join them
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
