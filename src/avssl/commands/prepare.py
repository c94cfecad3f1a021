"""Prepare a data set for training: decode frames and audio once, into the layout read fastest.

INPUT is one of:
  * a directory of videos, searched recursively: files with a video extension (mp4 mkv webm
    avi mov m4v flv mpg) and any other file FFmpeg opens as a video (.ogg, .ogv, .ts, ...);
    files that are not videos are listed with the reason in OUT/ignored.csv and counted in the
    summary. Clip ids are the file stems (stems that repeat get their relative path, '/' -> '__');
  * a text file listing video paths, one per line (relative to its folder, or to --root);
  * an avssl JSONL manifest (records with 'video'; labels, split and extra fields carry over);
  * a CAV-MAE / EquiAV JSON manifest ({"data": [{"video_id", "wav", "video_path", "labels"}]});
  * an SSL-TIE / LVS id list (text or CSV) with --layout and --root.

Raw videos give OUT/frames/<id>/<k>.jpg (--frames frames at the centres of equal segments of
the clip, JPEG quality 95) and OUT/audio/<id>.wav (mono, 16-bit, at the file's own rate unless
--sample-rate sets one). Pre-extracted clips are checked (every frame and the audio must decode,
audio non-empty and not silent): their frames stay where they are unless --size/--short-side asks for resizing,
and audio that is not already a mono wav (at --sample-rate, when given) is converted into OUT/audio.

A clip is finished when OUT/done/<id>.json is written (atomically, last): a rerun skips finished
clips and redoes unfinished ones. Clips that cannot be used are listed in OUT/failures.csv (id,
path, reason); nothing is substituted for them. A clip whose audio track is digital silence
(every sample zero) is one of them, reason "silent audio", counted in the summary; with
--keep-silent it is kept instead, marked "silent_audio": true in its record and listed (id,
path, reason) in OUT/warnings.csv. OUT/manifest.jsonl lists every finished clip.

Exit status: 0 when the run completes (even with failed clips), 2 on a bad input, when the
output disk fills up or, with --on-error stop, at the first failed clip. A full disk stops the run
with one line; the clips finished keep their done/*.json (shards: the finished shards are kept),
and manifest.jsonl and failures.csv are rewritten to list them when there is room for them (each
on its own, atomically: the line names any that could not be, whose previous version is then
left as it was); a rerun after freeing space resumes, writes them, and removes the temporary
files a killed write left.

--format shards writes webdataset tar shards instead (OUT/shards/shard-XXXXXX.tar, ~--shard-size
clips each: per clip its JSON record, 16-bit wav (or --audio-format flac) audio and the JPEG frames) and the index
OUT/shards.json that training reads (data.train_shards=OUT/shards.json). --shard-of i/N prepares
one slice of the input list (every machine of a cluster its own, no coordination needed; a rerun
skips its finished shards); `avssl prepare --merge OUT` then checks that every shard is there
and writes the index and OUT/failures.csv.

Examples:
    avssl prepare videos/ data/vggsound --size 224 --workers 8
    avssl prepare videos.txt data/vgg_shards --format shards --shard-of 3/16    # task 3 of 16
    avssl prepare --merge data/vgg_shards
    avssl prepare cavmae_train.json data/as20k
    avssl prepare flickr_test.txt data/flickr_test --layout test --root /data/Flickr
"""
from __future__ import annotations

import argparse
import logging

HELP = "decode raw videos or check pre-extracted data into frames/, audio/ and a manifest"

log = logging.getLogger(__name__)


def _rate(text: str) -> int | None:
    """``native`` (None: keep each file's own rate) or a positive integer rate in Hz."""
    return None if text.strip().lower() == "native" else _positive(text)


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from e
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avssl.data.manifest import SSLTIE_LAYOUTS

    parser.add_argument("input", metavar="INPUT",
                        help="video folder, list of video paths, .jsonl/.json manifest or id list")
    parser.add_argument("out", metavar="OUT", nargs="?", help="output folder")
    parser.add_argument("--frames", type=_positive, default=10,
                        help="frames per raw video, evenly spread (default 10)")
    parser.add_argument("--sample-rate", type=_rate, default=None, metavar="HZ|native",
                        help="output audio rate in Hz, or 'native' (default: each file's own rate, "
                             "as SSL-TIE and EquiAV both read audio; 16000 gives the CAV-MAE layout)")
    resize = parser.add_mutually_exclusive_group()
    resize.add_argument("--size", type=_positive, default=None, metavar="N",
                        help="resize the short side to N and centre-crop N x N (CAV-MAE: 224)")
    resize.add_argument("--short-side", type=_positive, default=None, metavar="N",
                        help="resize the short side to N, keeping the aspect ratio")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all CPUs; 0 or 1: in this process)")
    parser.add_argument("--layout", choices=sorted(SSLTIE_LAYOUTS), default=None,
                        help="folder layout of an SSL-TIE id list")
    parser.add_argument("--root", default=None,
                        help="data root of an id list; base of relative paths in lists/manifests")
    parser.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                        help="skip: list failed clips in failures.csv and go on (default); "
                        "stop: abort at the first")
    parser.add_argument("--limit", type=_positive, default=None, metavar="N",
                        help="only the first N clips of INPUT")
    parser.add_argument("--keep-silent", action="store_true",
                        help="keep clips whose audio is digital silence (every sample zero) in the manifest, "
                             "listed in OUT/warnings.csv (--format shards: marked in the clip's JSON record and "
                             "logged); default: they fail, reason 'silent audio'")
    shards = parser.add_argument_group("shards (webdataset tar files, for streaming and clusters)")
    shards.add_argument("--format", choices=("folder", "shards"), default="folder",
                        help="folder: frames/, audio/, manifest.jsonl (default); shards: OUT/shards/"
                             "shard-XXXXXX.tar of --shard-size clips + OUT/shards.json")
    shards.add_argument("--shard-size", type=_positive, default=1000, metavar="N",
                        help="clips per shard (default 1000)")
    shards.add_argument("--audio-format", choices=("wav", "flac"), default="wav",
                        help="audio in the shards: 16-bit wav (default, fastest to read) or FLAC "
                             "(the same samples in about half the space)")
    shards.add_argument("--shard-of", default=None, metavar="i/N",
                        help="prepare only slice i of N (e.g. a SLURM array task: "
                             "--shard-of $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); a rerun resumes "
                             "it; then run --merge once")
    shards.add_argument("--merge", action="store_true",
                        help="avssl prepare --merge OUT: check every slice's shards are there, write "
                             "OUT/shards.json and OUT/failures.csv")


def run(args: argparse.Namespace) -> int:
    from avssl.data.manifest import ManifestError
    from avssl.data.prepare import PrepareError, prepare
    from avssl.data.prepare_shards import merge, parse_shard_of, prepare_shards

    kw = dict(frames=args.frames, sample_rate=args.sample_rate, size=args.size, short_side=args.short_side,
              workers=args.workers, layout=args.layout, root=args.root, on_error=args.on_error, limit=args.limit)
    try:
        if args.merge:
            if args.out is not None:
                raise PrepareError("--merge takes the output folder alone: avssl prepare --merge OUT")
            merge(args.input)
        elif args.out is None:
            raise PrepareError("give INPUT and OUT (or --merge OUT)")
        elif args.format == "shards":
            shard_of = parse_shard_of(args.shard_of) if args.shard_of else (0, 1)
            prepare_shards(args.input, args.out, shard_size=args.shard_size, shard_of=shard_of,
                           audio_format=args.audio_format, keep_silent=args.keep_silent, **kw)
        elif args.shard_of:
            raise PrepareError("--shard-of needs --format shards")
        else:
            prepare(args.input, args.out, keep_silent=args.keep_silent, **kw)
    except (PrepareError, ManifestError, ValueError) as e:
        log.error("%s", e)
        return 2
    return 0
