"""avssl.commands: one module per subcommand (``add_arguments`` and ``run``), and the user-error
helpers they and :mod:`avssl.cli` share, and the argparse count types."""
from __future__ import annotations

import argparse
import re

__all__ = ["add_sample_rate_option", "error_text", "loader_worker_error", "worker_error_parts", "user_error_classes", "positive_int", "non_negative_int"]


def user_error_classes() -> tuple[type[BaseException], ...]:
    """The project's exceptions that report a user's mistake (a bad file, config or checkpoint)."""
    from avssl.checkpoint import CheckpointError
    from avssl.config import ConfigError
    from avssl.data.annotations import AnnotationError
    from avssl.data.decode import MediaError
    from avssl.data.manifest import ManifestError
    from avssl.data.prepare import PrepareError
    from avssl.distributed import DistributedTimeoutError

    return (ConfigError, AnnotationError, MediaError, ManifestError, CheckpointError, PrepareError,
            DistributedTimeoutError)


_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.")
_USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _subclass_names(classes) -> set[str]:
    """The names of ``classes`` and of all their subclasses (a worker error's type is known by name)."""
    names, todo = set(), list(classes)
    while todo:
        c = todo.pop()
        if c.__name__ not in names:
            names.add(c.__name__)
            todo.extend(c.__subclasses__())
    return names


def worker_error_parts(e: BaseException) -> tuple[str, str] | None:
    """``(type name, message)`` of the exception a DataLoader worker raised, which the loader
    re-raises in the main process (as its type, or as RuntimeError when that type cannot be
    rebuilt from one string) with the worker's whole traceback as its text; None when ``e`` is
    not such an error. The message is the original error's last line, without its type."""
    text = str(e)
    m = _WORKER_ERROR.match(text)
    if m is None:
        return None
    name = m.group(1)
    last = next((x.strip() for x in reversed(text.splitlines()) if x.strip()), "")
    head, sep, message = last.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == name:
        return name, message
    return name, last


def loader_worker_error(e: BaseException) -> str | None:
    """The message of a user error (:func:`user_error_classes` or a subclass, a missing or
    unreadable file) raised in a DataLoader worker: the original exception's last line, or None
    when ``e`` is not from a worker or is not a user error (a bug keeps its traceback)."""
    parts = worker_error_parts(e)
    if parts is None:
        return None
    name, message = parts
    users = _subclass_names(user_error_classes()) | _subclass_names(_USER_OS_ERRORS)
    return message if name in users or isinstance(e, user_error_classes()) else None


def error_text(e: BaseException) -> str:
    """What a command prints for the user error ``e`` (a command catches the types it knows to be
    the user's): its text, or, for one a DataLoader worker raised, whatever its type, the
    original error's message in one line instead of the worker's traceback."""
    parts = worker_error_parts(e)
    return parts[1] if parts is not None else str(e)


def _int_at_least(low: int, what: str):
    """argparse type: an integer >= ``low`` (a count of 0 must not silently mean "default")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer (>= 1)")
non_negative_int = _int_at_least(0, "an integer >= 0")  # data loader workers: 0 loads in the main process


def add_sample_rate_option(parser: argparse.ArgumentParser, what: str = "the audio") -> None:
    """``--sample-rate HZ`` of the commands that run a checkpoint on new audio (eval, localize)."""
    parser.add_argument("--sample-rate", type=positive_int, default=None, metavar="HZ",
                        help=f"resample {what} to HZ at load (default: the checkpoint's data.sample_rate; none "
                             "there = each file's native rate). A warning names the clips whose rate is not one "
                             "the model was trained on (recorded in the checkpoint)")
