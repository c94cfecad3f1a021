"""Tar shards (the webdataset layout): the clip encodings, the shard index, the training stream.

``avssl prepare ... --format shards`` (:mod:`avssl.data.prepare`) writes, under ``OUT``::

    shards/shard-000000.tar   ~``shard_size`` clips; per clip ``<key>.json`` (the record: id,
                              labels, split, duration, frame_times, source, original sizes and
                              sample rate), ``<key>.wav`` (16-bit mono; or ``.flac``) and
                              ``<key>.00.jpg`` ...
    shards/shard-000000.json  the sidecar: clips, ids and failures of that shard, written last
    shards.json               the index (shards and their clip counts, classes, options, the
                              brace pattern), written once every shard is there
    failures.csv              (id, path, reason) of every clip that could not be used

Keys are the clip's place in the input list (9 digits; ids may hold dots, which webdataset's
file naming splits on); the id is in the JSON. A shard holds exactly what the folder layout
holds (the same JPEGs, the same 16-bit samples), so a sample read from a shard equals the one
read from ``frames/`` + ``audio/`` (tested).

:class:`ShardStream` reads them for training (:func:`avssl.engine.train.fit` with
``data.train_shards``): a module docstring of its own says what it yields and what a resume
reproduces. Tar reading, URL opening (local paths, ``http(s)://``, ``pipe:``) and brace
expansion are webdataset's. :mod:`avssl.data.shard_access` reads a local index as manifest
records (random access by byte range: evaluation, validation).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from avssl.data.decode import CorruptMediaError, MediaError, read_image_bytes, read_wav_bytes
from avssl.data.record import ManifestError, Record
from avssl.seeding import mix

logger = logging.getLogger(__name__)

__all__ = ["INDEX_NAME", "ShardIndex", "ShardStream", "audio_key", "encode_audio", "encode_jpeg", "expand_shards",
           "frame_keys", "is_url", "read_index", "sample_key", "shard_name"]

INDEX_NAME = "shards.json"
FORMAT = "avssl-shards/1"


def shard_name(g: int) -> str:
    """The file name of shard ``g``."""
    return f"shard-{g:06d}.tar"


def sample_key(place: int) -> str:
    """The tar key of the clip at ``place`` in the input list."""
    return f"{place:09d}"


# ----------------------------------------------------------------------------- encoding
def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 ``(H, W, 3)`` -> JPEG bytes (PIL, as the folder layout's files)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_audio(wave: np.ndarray, rate: int, fmt: str = "wav") -> bytes:
    """Mono float ``(N,)`` -> 16-bit ``"wav"`` (the folder layout's file, byte for byte) or
    ``"flac"`` bytes (the same samples, about half the size, ~8 ms more to decode 10 s at 44.1 kHz)."""
    import soundfile as sf

    wav = io.BytesIO()
    sf.write(wav, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    if fmt == "wav":
        return wav.getvalue()
    if fmt != "flac":
        raise ValueError(f"audio format must be 'wav' or 'flac', got {fmt!r}")
    # libsndfile rounds float to 16 bits one way for wav and another for FLAC: store the wav's integers
    ints, _ = sf.read(io.BytesIO(wav.getvalue()), dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, ints, rate, subtype="PCM_16", format="FLAC")
    return buf.getvalue()


def frame_keys(keys) -> list[str]:
    """A sample's frame extensions (``00.jpg``, ...), in frame order."""
    return sorted(k for k in keys if k.split(".")[-1] in ("jpg", "jpeg", "png"))


def audio_key(keys) -> str | None:
    return next((k for k in ("wav", "flac") if k in keys), None)


# ----------------------------------------------------------------------------- the index
class ShardIndex:
    """``shards.json``: ``urls`` (absolute paths or URLs), ``clips`` per shard, ``classes``, options."""

    def __init__(self, urls: Sequence[str], clips: Sequence[int], classes: Sequence[str] | None = None,
                 options: dict | None = None) -> None:
        self.urls, self.clips = list(urls), [int(c) for c in clips]
        self.classes = list(classes) if classes is not None else None
        self.options = dict(options or {})

    @property
    def total(self) -> int:
        return sum(self.clips)


def is_url(spec: str) -> bool:
    """A URL webdataset opens (``scheme://`` or ``pipe:``), not a local path."""
    return "://" in spec or spec.startswith("pipe:")


def _fetch_text(where: str) -> str:
    """The text of a local file or an ``http(s)://`` URL (an index: small)."""
    if "://" not in where:
        return Path(where).read_text(encoding="utf-8")
    from urllib.request import urlopen

    with urlopen(where, timeout=60) as f:  # noqa: S310 (http(s) only: checked by the caller)
        return f.read().decode("utf-8")


def read_index(path: str | os.PathLike, data: dict | None = None) -> ShardIndex:
    """Read a ``shards.json`` (a local path or an ``http(s)://`` URL; the shard files in it are
    relative to its folder). ``data``: its JSON, already parsed."""
    where = str(path)
    if where.startswith(("http://", "https://")):
        base = where.rsplit("/", 1)[0] + "/"
        resolve = lambda f: f if is_url(f) else base + f  # noqa: E731
    elif is_url(where):
        raise ValueError(f"{where}: a shard index is read from a local path or an http(s):// URL")
    else:
        where = os.path.abspath(where)
        resolve = lambda f: f if is_url(f) else str(Path(where).parent / f)  # noqa: E731
    if data is None:
        try:
            data = json.loads(_fetch_text(where))
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: not a readable shard index ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise ValueError(f"{where}: not an avssl shard index (format {got!r}, expected {FORMAT!r})")
    try:
        return ShardIndex([resolve(s["file"]) for s in data["shards"]], [s["clips"] for s in data["shards"]],
                          data.get("classes"), data.get("options"))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: a damaged shard index (no {e})") from e


def expand_shards(spec: str) -> ShardIndex:
    """``data.train_shards`` -> the shards and their clip counts.

    ``spec``: a ``shards.json`` index (local or ``http(s)://``), or a brace pattern
    (``.../shard-{000000..000099}.tar``, local paths or URLs webdataset opens; ``::`` joins
    several). The clip counts of a pattern's shards come from the index next to them
    (``../shards.json`` or ``shards.json`` in their folder), which must list every one of them:
    an epoch's length is fixed by the counts."""
    if spec.endswith(".json"):
        return read_index(spec)
    from webdataset.shardlists import expand_urls

    urls = expand_urls(spec)
    if not urls:
        raise ValueError(f"data.train_shards={spec!r} names no shards")
    remote = urls[0].startswith(("http://", "https://"))
    if remote:
        folder = urls[0].rsplit("/", 1)[0]
        cands = [folder.rsplit("/", 1)[0] + "/" + INDEX_NAME, folder + "/" + INDEX_NAME]
    elif is_url(urls[0]):
        raise ValueError(f"data.train_shards={spec!r}: the clip counts of {urls[0].split(':')[0]}: shards "
                         f"cannot be looked up; give their index (data.train_shards=.../{INDEX_NAME})")
    else:
        first = Path(urls[0])
        cands = [str(c) for c in (first.parent.parent / INDEX_NAME, first.parent / INDEX_NAME) if c.is_file()]
    index = cand = failed = None
    for cand in cands:
        try:
            index = read_index(cand)
            break
        except ValueError as e:
            if not remote:
                raise
            failed = e
    if index is None:
        why = f" ({failed})" if failed is not None else ""
        raise ValueError(f"data.train_shards={spec!r}: no {INDEX_NAME} next to {urls[0]} (the clip counts){why}; "
                         f"give the index itself, e.g. data.train_shards=OUT/{INDEX_NAME}")
    norm = (lambda u: u) if remote else os.path.abspath
    counts = {norm(u): c for u, c in zip(index.urls, index.clips, strict=True)}
    missing = [u for u in urls if norm(u) not in counts]
    if missing:
        raise ValueError(f"data.train_shards: {len(missing)} shards are not in {cand} (e.g. {missing[0]})")
    return ShardIndex(urls, [counts[norm(u)] for u in urls], index.classes, index.options)


# ----------------------------------------------------------------------------- the stream
def _unreadable_shard(urls: set[str]):
    """webdataset's error handler for a stream over ``urls``: a shard that cannot be opened or
    read stops training with one line naming it (a skipped shard would silently drop ~1000
    clips from every epoch)."""
    def handler(exn: Exception) -> bool:
        url = next((a for a in exn.args if isinstance(a, str) and a in urls), None)
        if url is None or isinstance(exn, ManifestError):  # the tar reader's inner call: the
            raise exn  # caller adds the shard's url and asks again
        first = str(exn.args[0]) if exn.args else ""
        curl = re.search(r"'curl'.*exit (\d+)", first)
        if curl:  # webdataset's Pipe error: the curl command line and its status
            why = f"curl exited with status {curl.group(1)} (22: an HTTP error such as 404; 7: no connection)"
        else:
            detail = exn.strerror if isinstance(exn, OSError) and exn.strerror else first.split(" @ ")[0]
            why = f"{type(exn).__name__}: {detail if detail else repr(exn)}"
            if "://" in url and detail == "empty file":
                why += "; nothing was received: is the URL right (HTTP 404?)"
        raise ManifestError(f"shard {url}: cannot be read ({why})") from exn
    return handler


class ShardStream(IterableDataset):
    """Training batches read from shards, split over ranks and loader workers.

    The stream is cut into ``groups`` data groups (``data.shard_groups``; default one per
    process); process ``rank`` of ``world`` serves groups ``rank, rank + world, ...`` and its
    batch is their sub-batches concatenated. Each group's part is split over the loader's
    ``workers`` (0 counts as 1): stream ``(group, worker)`` reads the shards ``order[q::streams]``
    of a shard permutation drawn from ``(seed, epoch)`` (so within an epoch no two streams read
    one shard: the data each rank sees is disjoint), or, with ``resampled``, shards drawn with
    replacement from ``(seed, epoch, stream)`` (open_clip's resampled shards). A stream wraps
    around its shards when they run out. Samples pass a shuffle buffer of ``shuffle_buffer``
    (seeded from ``(seed, epoch, stream)``; only the frame a sample will use is kept in it).

    Every epoch has exactly ``len(self)`` batches on every rank: ``ceil(clips / global batch)``
    (``floor`` with ``drop_last``) from the index's clip counts, so DDP ranks stay in step.

    What a resume reproduces: everything. A batch is a function of ``(seed, epoch, groups,
    workers, batch size, the shard list)`` only, and training checkpoints at epoch ends, so a
    run resumed from ``last.pt`` reads the same batches as the uninterrupted run (tested); a
    run killed mid-epoch redoes that epoch from its start. The number of processes does not
    change the global batches when ``groups`` is fixed: one process with ``groups=2`` reads the
    batches two processes read (tested against a 2-node torchrun).

    ``maker``: an :class:`avssl.data.datasets.AVFrameAudioDataset` (no records) that turns a
    decoded frame and waveform into the method's sample (sizes, rates, padding); ``collate``:
    the pipeline's. Clips that fail to decode are logged, counted and skipped, never replaced;
    a stream in which no clip decodes raises MediaError.
    """

    def __init__(self, index: ShardIndex, maker, collate, batch_size: int, *, seed: int = 0,
                 rank: int = 0, world: int = 1, groups: int | None = None, workers: int = 0,
                 shuffle_buffer: int = 1000, resampled: bool = False, drop_last: bool = False,
                 random_frames: bool = False) -> None:
        groups = world if groups is None else int(groups)
        if groups < 1 or groups % world:
            raise ValueError(f"data.shard_groups={groups} must be a positive multiple of the {world} processes")
        mine = list(range(rank, groups, world))
        if batch_size % len(mine):
            raise ValueError(f"train.batch_size={batch_size} must be a multiple of this process's "
                             f"{len(mine)} data groups (data.shard_groups={groups} over {world} processes)")
        self.index, self.maker, self.collate = index, maker, collate
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.groups, self.mine, self.sub = groups, mine, batch_size // len(mine)
        self.workers, self.shuffle_buffer = max(1, workers), max(1, shuffle_buffer)
        self.resampled, self.random_frames, self.epoch = resampled, random_frames, 0
        self.classes = maker.classes
        streams = groups * self.workers
        if not resampled and len(index.urls) < streams:
            raise ValueError(f"{len(index.urls)} shards cannot give each of {groups} data groups x "
                             f"{self.workers} loader workers a shard of its own: use fewer workers, "
                             f"data.shard_resampled=true, or smaller shards")
        glob = batch_size * world
        self.steps = index.total // glob if drop_last else math.ceil(index.total / glob)
        if self.steps < 1:
            raise ValueError(f"{index.total} clips give no batch of {batch_size} x {world} processes (drop_last)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps

    def _shards(self, q: int) -> Iterator[str]:
        """Stream ``q``'s shard URLs, endlessly."""
        urls, streams = self.index.urls, self.groups * self.workers
        if self.resampled:
            rng = random.Random(mix(self.seed, self.epoch, q, 0x5E))
            while True:
                yield urls[rng.randrange(len(urls))]
        order = torch.randperm(len(urls), generator=torch.Generator().manual_seed(mix(self.seed, self.epoch, 0xA1)))
        own = [urls[i] for i in order[q::streams].tolist()]
        turn = 0
        while True:
            if turn:  # later passes over this stream's shards: another order
                rng = random.Random(mix(self.seed, self.epoch, q, turn))
                own = rng.sample(own, len(own))
            yield from own
            turn += 1

    def _samples(self, q: int) -> Iterator[dict]:
        """Stream ``q``'s raw samples (bytes), shuffled, with the frame each will use chosen."""
        from webdataset.tariterators import tarfile_samples

        rng = random.Random(mix(self.seed, self.epoch, q, 0xB7))
        raw = tarfile_samples(({"url": u} for u in self._shards(q)), handler=_unreadable_shard(set(self.index.urls)))
        buffer: list[dict] = []
        for s in raw:
            frames = frame_keys(s)
            s["__frame__"] = None  # a sample without frames fails in _decode, where failures are counted
            if frames:
                pick = rng.randrange(len(frames)) if self.random_frames else self._fixed(len(frames))
                s["__frame__"] = frames[pick]
                for k in frames:
                    if k != s["__frame__"]:
                        del s[k]
            if len(buffer) < self.shuffle_buffer:
                buffer.append(s)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], s = s, buffer[i]
            yield s

    def _fixed(self, n: int) -> int:
        k = self.maker.frame_index
        return min(k, n - 1) if k is not None else n // 2

    def _decode(self, s: dict) -> dict:
        where = f"{s.get('__url__')}:{s.get('__key__')}"
        audio = audio_key(s)
        missing = [what for what, ok in (("its JSON record", "json" in s), ("frames", s["__frame__"]),
                                         ("audio (.wav / .flac)", audio)) if not ok]
        if missing:
            raise CorruptMediaError(where, f"the sample has no {' and no '.join(missing)}")
        try:
            meta = json.loads(s["json"])
            rec = Record(id=meta["id"], labels=meta.get("labels", []), split=meta.get("split"))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptMediaError(where, f"unreadable JSON record ({e})") from e
        frame = read_image_bytes(s[s["__frame__"]], where)
        wave, sr = read_wav_bytes(s[audio], where, self.maker.sample_rate)
        return self.maker.sample(rec, frame, wave, sr)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info is not None else (0, 1)
        if n != self.workers:
            raise RuntimeError(f"ShardStream built for {self.workers} loader workers runs under {n}")
        streams = {g: self._samples(g * self.workers + k) for g in self.mine}
        skipped = in_a_row = 0  # per loader worker
        for _ in range(k, self.steps, self.workers):  # this worker's batches: k, k + workers, ...
            samples = []
            for g in self.mine:
                got = 0
                while got < self.sub:
                    try:
                        samples.append(self._decode(next(streams[g])))
                        got, in_a_row = got + 1, 0
                    except MediaError as e:
                        skipped, in_a_row = skipped + 1, in_a_row + 1
                        logger.warning("skipping a clip that failed to decode (%d skipped by this loader worker): %s",
                                       skipped, e)
                        if in_a_row > self.index.total:  # the stream has gone round without one good clip
                            raise MediaError(e.path, f"no clip of this stream decodes ({e.reason})") from e
            yield self.collate(samples)
