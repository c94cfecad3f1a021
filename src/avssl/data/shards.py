"""Tar shards (the webdataset layout): the clip encodings, the shard index, the training stream.

``avssl prepare ... --format shards`` (:mod:`avssl.data.prepare`) writes, under ``OUT``::

    shards/shard-000000.tar   ~``shard_size`` clips; per clip ``<key>.json`` (the record: id,
                              labels, split, duration, frame_times, source, original sizes and
                              sample rate, and ``crc32``: the CRC-32 of each other member),
                              ``<key>.wav`` (16-bit mono; or ``.flac``) and ``<key>.00.jpg`` ...
    shards/shard-000000.json  the sidecar: clips, ids and failures of that shard, written last
    shards.json               the index (shards and their clip counts, also by split; classes;
                              each split's label sets; options; the brace pattern), written
                              once every shard is there
    failures.csv              (id, path, reason) of every clip that could not be used

Keys are the clip's place in the input list (9 digits; ids may hold dots, which webdataset's
file naming splits on); the id is in the JSON. A shard holds exactly what the folder layout
holds (the same JPEGs, the same 16-bit samples), so a sample read from a shard equals the one
read from ``frames/`` + ``audio/`` (tested). Readers check a member's CRC-32 before decoding it:
damaged bytes inside an image or a wav mostly decode (to garbage) without an error, so the
clip fails as one that does not decode (shards written before CRCs were kept are not checked).

:class:`ShardStream` reads them for training (:func:`avssl.engine.train.fit` with
``data.train_shards``): a module docstring of its own says what it yields and what a resume
reproduces. Tar reading, URL opening (local paths, ``http(s)://``, ``pipe:``) and brace
expansion are webdataset's. :mod:`avssl.data.shard_index` names the files and reads the index;
:mod:`avssl.data.shard_access` reads a local index as manifest records (random access by byte
range: evaluation, validation).
"""
from __future__ import annotations

import io
import json
import logging
import math
import random
import re
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from avssl.data.decode import CorruptMediaError, MediaError, read_image_bytes, read_wav_bytes
from avssl.data.record import ManifestError, Record
from avssl.data.shard_index import (
    ShardIndex,
    audio_key,
    count_mismatch,
    damaged,
    frame_keys,
    member_crc,
)
from avssl.seeding import mix

logger = logging.getLogger(__name__)

__all__ = ["ShardStream", "encode_audio", "encode_jpeg"]


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


def _counted(files: Iterator[dict], clips: dict[str, int]) -> Iterator[dict]:
    """webdataset's tar members (``{fname, data, __url__}``, ``{}`` at the end of each shard) passed
    through, with each shard's clips (its distinct keys in a row, as webdataset groups them)
    counted as they go by and checked, at the shard's end, against ``clips`` (the index's count
    per URL): an index listing more or fewer clips than a tar holds (a stale ``shards.json``)
    would make every epoch repeat or drop clips, so a mismatch stops with one ManifestError
    naming the shard. A shard not read to its end (the epoch ended) is not checked."""
    from webdataset.tariterators import base_plus_ext

    url = key = None
    count = 0
    for f in files:
        if f == {}:  # the end of a shard
            if url is not None and count != clips.get(url, count):
                raise ManifestError(count_mismatch(url, count, clips[url]))
            url, key, count = None, None, 0
        else:
            url = f.get("__url__", url)
            prefix = base_plus_ext(f.get("fname") or "")[0]
            if prefix is not None and prefix != key:
                key, count = prefix, count + 1
        yield f


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

    ``split``: keep only that split's clips and those without one (``data.train_split``, as the
    manifest path filters; None: every clip); the others are read and passed over.

    Every epoch has exactly ``len(self)`` batches on every rank: ``ceil(clips / global batch)``
    (``floor`` with ``drop_last``) from the index's clip counts of the kept split, so DDP ranks
    stay in step.

    What a resume reproduces: everything. A batch is a function of ``(seed, epoch, groups,
    workers, batch size, the shard list)`` only, and training checkpoints at epoch ends, so a
    run resumed from ``last.pt`` reads the same batches as the uninterrupted run (tested); a
    run killed mid-epoch redoes that epoch from its start. The number of processes does not
    change the global batches when ``groups`` is fixed: one process with ``groups=2`` reads the
    batches two processes read (tested against a 2-node torchrun).

    ``maker``: an :class:`avssl.data.datasets.AVFrameAudioDataset` (no records) that turns a
    decoded frame and waveform into the method's sample (sizes, rates, padding); ``collate``:
    the pipeline's. Clips that fail to decode (their frame or audio bytes damaged: not the
    CRC-32 their record holds; or not decodable) are logged with the shard and the key, counted
    and skipped, never replaced; a stream in which no clip decodes raises MediaError.

    Each shard's clips are counted as it is read and checked against the index at its end: a
    shard holding more or fewer clips than ``index`` lists stops the stream with a ManifestError
    naming it and both counts (the epoch length comes from the index).
    """

    def __init__(self, index: ShardIndex, maker, collate, batch_size: int, *, seed: int = 0,
                 rank: int = 0, world: int = 1, groups: int | None = None, workers: int = 0,
                 shuffle_buffer: int = 1000, resampled: bool = False, drop_last: bool = False,
                 random_frames: bool = False, split: str | None = None) -> None:
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
        self.split, self.kept = split, sum(index.clips_of(split))
        if not self.kept:
            raise ValueError(f"the shards hold no clip of split {split!r} (nor clips without a split): "
                             f"set data.train_split (null: every clip)")
        glob = batch_size * world
        self.steps = self.kept // glob if drop_last else math.ceil(self.kept / glob)
        if self.steps < 1:
            raise ValueError(f"{self.kept} clips give no batch of {batch_size} x {world} processes (drop_last)")

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
        from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

        rng = random.Random(mix(self.seed, self.epoch, q, 0xB7))
        # webdataset's tarfile_samples, with each shard's clips counted against the index on the way
        handler = _unreadable_shard(set(self.index.urls))
        files = tar_file_expander(url_opener(({"url": u} for u in self._shards(q)), handler=handler), handler=handler)
        raw = group_by_keys(_counted(files, dict(zip(self.index.urls, self.index.clips, strict=True))),
                            handler=handler)
        buffer: list[dict] = []
        passed = 0  # samples of other splits in a row
        for s in raw:
            if self.split is not None:
                try:
                    meta = json.loads(s["json"])
                    s["__meta__"] = meta
                    theirs = meta.get("split")
                except (KeyError, ValueError, TypeError, AttributeError):
                    theirs = None  # fails in _decode, where failures are counted
                if theirs not in (None, self.split):
                    passed += 1
                    if passed > self.index.total:  # round all the stream's shards without a clip to keep
                        raise ManifestError(f"loader stream {q} reads shards with no clip of split {self.split!r}: "
                                         "use fewer loader workers or data.shard_resampled=true")
                    continue
                passed = 0
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
            meta = s["__meta__"] if "__meta__" in s else json.loads(s["json"])
            rec = Record(id=meta["id"], labels=meta.get("labels", []), split=meta.get("split"))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptMediaError(where, f"unreadable JSON record ({e})") from e
        for ext in (s["__frame__"], audio):
            why = damaged(s[ext], member_crc(meta, ext))
            if why is not None:
                raise CorruptMediaError(where, f"clip {rec.id}: {ext}: {why}")
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
