"""Start a local web page that shows where the sound is in a video (needs `pip install avssl[app]`).

Upload a video (any format the decoder reads) or pick a bundled example; the page localises the
sound at evenly spaced frames with the checkpoint's method (SSL-TIE maps, or EquiAV's zero-shot
maps) and shows the overlay video with its original audio, a time slider with the heatmap of the
frame under it, an opacity control and the peak location. Files above --max-mb or longer than
--max-seconds are refused with a message; requests queue one at a time; uploads and outputs live
in a temporary folder removed when the server stops (Ctrl-C or SIGTERM). Only 127.0.0.1 by default.

Example:
    avssl app --checkpoint runs/demo/runs/ssltie_seed0/best.pt --port 7860
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile

HELP = "a local web page: upload a video, see where the sound is (Gradio; pip install avssl[app])"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="an avssl checkpoint (SSL-TIE or EquiAV)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-mb", type=float, default=200.0, help="largest upload in MB (default 200)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="longest video in seconds (default 300)")
    parser.add_argument("--frames", type=int, default=16, help="frames localised per video (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--no-examples", action="store_true", help="do not generate the bundled example clips")


def serve(args: argparse.Namespace, block: bool = True):
    """Build and launch the page; returns ``(page, localiser, tmp)`` (``block=False``: for tests)."""
    from avssl.app import Limits, Localiser, build_page, make_examples

    tmp = tempfile.TemporaryDirectory(prefix="avssl_app_")
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(tmp.name, "uploads")  # uploads land in our folder
    localiser = Localiser(args.checkpoint, Limits(args.max_mb, args.max_seconds, args.frames), args.device,
                          workdir=os.path.join(tmp.name, "results"))
    examples = [] if args.no_examples else make_examples(os.path.join(tmp.name, "examples"))
    page = build_page(localiser, examples)
    # SIGTERM (kill, systemd, docker stop) stops the server as Ctrl-C does, so the folder goes too
    previous = signal.signal(signal.SIGTERM, _interrupt) if block else None
    try:
        page.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=not block, show_error=True,
                    allowed_paths=[tmp.name], max_file_size=f"{int(args.max_mb)}mb")
    finally:
        if block:  # the server has stopped (Ctrl-C or SIGTERM included): uploads and results go with it
            signal.signal(signal.SIGTERM, previous)
            tmp.cleanup()
    return page, localiser, tmp


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("avssl app: error: the web page needs Gradio: pip install 'avssl[app]'", file=sys.stderr)
        return 2
    from avssl.app import Limits

    try:
        Limits(args.max_mb, args.max_seconds, args.frames)
    except ValueError as e:
        print(f"avssl app: error: {e}", file=sys.stderr)
        return 2
    serve(args, block=True)
    return 0
