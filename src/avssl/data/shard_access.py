"""Random access into local shards: a ``shards.json`` read as manifest records.

:func:`avssl.data.manifest.read_manifest` hands a shard index here, so every manifest argument
(``avssl eval --data``, ``data.val_manifest``, a small ``data.train_manifest``) may name one.
Each tar's headers are read once, with each clip's JSON record; a sample is then read by byte
range (:func:`member_bytes`), so the data sets built on these records give the samples of the
folder layout prepared from the same list, bit for bit (tested). URLs have no random access:
stream them with ``data.train_shards`` (:class:`avssl.data.shards.ShardStream`).
"""
from __future__ import annotations

import json
import os
import tarfile

from avssl.data.decode import CorruptMediaError, MediaError
from avssl.data.record import ManifestError, Record
from avssl.data.shard_index import (
    audio_key,
    count_mismatch,
    damaged,
    frame_keys,
    is_url,
    member_crc,
    read_index,
)

__all__ = ["SHARD_MEMBERS", "member_bytes", "shard_records"]

#: ``Record.extra`` key of a clip read from a shard: ``(tar path, {member name: (offset, size, CRC-32)})``
#: (the CRC-32 from the clip's JSON record; None in shards written before CRCs were kept).
SHARD_MEMBERS = "shard_members"


def shard_records(path: str | os.PathLike, data: dict | None = None) -> list[Record]:
    """The clips of a local shard index as records, for random access (evaluation, validation,
    small training sets): any manifest argument may name a ``shards.json``.

    Each tar's headers are read once (and each clip's JSON record); a tar holding more or fewer
    clips than the index lists raises ManifestError naming it and both counts. A record's
    ``frames`` and ``audio`` are ``TAR#MEMBER`` names (what errors print), its
    ``extra[SHARD_MEMBERS]`` the byte ranges :func:`member_bytes` reads. Records come in
    input-list order."""
    try:
        index = read_index(path, data)
    except ValueError as e:
        raise ManifestError(str(e)) from e
    remote = [u for u in index.urls if is_url(u)]
    if remote:
        raise ManifestError(f"{path}: random access (evaluation, manifests) reads local shards, but {remote[0]} "
                            f"is a URL: copy the shards to a local disk, or train from it with data.train_shards")
    keyed = []
    for url, clips in zip(index.urls, index.clips, strict=True):
        got = _tar_records(url)
        if len(got) != clips:
            raise ManifestError(count_mismatch(url, len(got), clips))
        keyed.extend(got)
    keyed.sort(key=lambda kr: kr[0])
    return [r for _, r in keyed]


def _tar_records(tar: str) -> list[tuple[str, Record]]:
    members: dict[str, dict[str, tuple[int, int]]] = {}
    metas: dict[str, bytes] = {}
    try:
        with tarfile.open(tar, "r:") as t:
            for m in t:
                if not m.isfile():
                    continue
                key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                members.setdefault(key, {})[m.name] = (m.offset_data, m.size)
                if ext == "json":
                    metas[key] = t.extractfile(m).read()
    except (OSError, tarfile.TarError) as e:
        raise ManifestError(f"shard {tar}: unreadable ({e})") from e
    out = []
    for key, names in members.items():
        where = f"{tar}#{key}"
        try:
            meta = json.loads(metas[key])
            rec_id, labels, split = str(meta["id"]), list(meta.get("labels", [])), meta.get("split")
        except (KeyError, ValueError, TypeError) as e:
            raise ManifestError(f"shard {where}: no readable JSON record ({e})") from e
        by_ext = {n.rsplit("/", 1)[-1].partition(".")[2]: n for n in names}
        names = {n: (*at, member_crc(meta, n.rsplit("/", 1)[-1].partition(".")[2])) for n, at in names.items()}
        frames, audio = [by_ext[e] for e in frame_keys(by_ext)], by_ext.get(audio_key(by_ext))
        if not frames or audio is None:
            raise ManifestError(f"shard {where} ({rec_id}): no {'frames' if not frames else 'audio'}")
        out.append((key, Record(id=rec_id, audio=f"{tar}#{audio}", frames=[f"{tar}#{n}" for n in frames],
                                labels=labels, split=split, extra={SHARD_MEMBERS: (tar, names),
                                                                   **_flags(meta)})))
    return out


def _flags(meta: dict) -> dict:
    """The marks a clip's JSON record carries into its Record's extra (``silent_audio``: kept by
    ``prepare --keep-silent``)."""
    return {"silent_audio": True} if isinstance(meta, dict) and meta.get("silent_audio") is True else {}


def member_bytes(record: Record, ref: str) -> bytes:
    """The bytes of member ``ref`` (``TAR#MEMBER``, one of the record's ``frames`` / ``audio``)."""
    tar, names = record.extra[SHARD_MEMBERS]
    offset, size, want = names[ref.rsplit("#", 1)[1]]
    try:
        with open(tar, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as e:
        raise MediaError(ref, f"cannot read the shard ({e})") from e
    if len(data) != size:
        raise CorruptMediaError(ref, f"the shard is truncated ({len(data)} of {size} bytes)")
    why = damaged(data, want)
    if why is not None:
        raise CorruptMediaError(ref, why)
    return data
