"""avssl.commands: one module per subcommand (``add_arguments`` and ``run``), and the user-error
helpers they and :mod:`avssl.cli` share, and the argparse count types."""
from __future__ import annotations

import argparse
import re

__all__ = ["error_text", "loader_worker_error", "user_error_classes", "positive_int", "non_negative_int"]


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


def loader_worker_error(e: BaseException) -> str | None:
    """The message of a user error raised in a DataLoader worker, which the loader re-raises in
    the main process (as its type or as RuntimeError) with the worker's traceback as the text:
    the original exception's last line, or None when that is not a user error."""
    text = str(e)
    m = _WORKER_ERROR.match(text)
    if m is None:
        return None
    name = m.group(1)
    users = {c.__name__ for c in user_error_classes()} | {
        "FileNotFoundError", "IsADirectoryError", "NotADirectoryError", "PermissionError"}
    last = next((x.strip() for x in reversed(text.splitlines()) if x.strip()), "")
    head, sep, message = last.partition(": ")
    if name not in users or not sep or head.rsplit(".", 1)[-1] != name:
        return None
    return message


def error_text(e: BaseException) -> str:
    """What a command prints for the user error ``e``: its text, or, for one a DataLoader worker
    raised, the original error's message instead of the worker's traceback."""
    return loader_worker_error(e) or str(e)


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
