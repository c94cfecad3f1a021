"""The ``avssl`` command line: ``avssl <command> [options]``.

Each command lives in ``avssl.commands.<name>`` and provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run``
so that ``avssl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from avssl import __version__
from avssl.commands import (
    app,
    convert,
    demo,
    loader_worker_error,
    localize,
    prepare,
    score,
    synth,
    user_error_classes,
)
from avssl.commands import eval as eval_command
from avssl.commands import train as train_command

COMMANDS = {
    "demo": demo,
    "synth": synth,
    "prepare": prepare,
    "score": score,
    "convert": convert,
    "localize": localize,
    "app": app,
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
    try:
        return int(args._run(args) or 0)
    except Exception as e:  # noqa: BLE001 - only user errors are caught, see user_error_message
        message = user_error_message(e)
        if message is None or os.environ.get("AVSSL_DEBUG", "").strip() not in ("", "0"):
            raise
        print(f"avssl: {message}", file=sys.stderr)
        return 2


def _one_line(text: str) -> str:
    lines = [x.strip() for x in str(text).strip().splitlines() if x.strip()]
    return lines[0] if lines else ""


def user_error_message(e: BaseException) -> str | None:
    """``"FILE: cause"`` for an error that is the user's to fix (a missing or unwritable file, a full
    disk, a bad config, checkpoint or media file, CUDA requested without CUDA); None for a bug
    (then the traceback is shown)."""
    worker = loader_worker_error(e)
    if worker is not None:
        return worker
    if isinstance(e, OSError) and not isinstance(e, user_error_classes()):
        name = e.filename if e.filename is not None else None
        if e.errno == errno.ENOSPC:
            where = name if name is not None else "a file"
            return f"{where}: disk full while writing {where} (No space left on device)"
        if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                          FileExistsError)) or name is not None:
            cause = e.strerror or _one_line(str(e)) or type(e).__name__
            return f"{name}: {cause}" if name is not None else cause
        return None
    if isinstance(e, user_error_classes()):
        return _one_line(str(e)) or type(e).__name__
    if isinstance(e, (AssertionError, RuntimeError)) and (
            "not compiled with cuda" in str(e).lower() or "no cuda gpus are available" in str(e).lower()
            or "found no nvidia driver" in str(e).lower()):
        return f"CUDA requested but not available: {_one_line(str(e))} (use --device cpu / train.device=cpu)"
    return None


if __name__ == "__main__":
    sys.exit(main())
