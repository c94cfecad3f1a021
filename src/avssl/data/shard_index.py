"""The shard layout's names and the shard index: ``shards.json`` read (local or ``http(s)://``),
brace patterns expanded, clip counts by split and label sets; the readers' shared checks (a
member's CRC-32, a shard's clip count against the index). The layout itself is described in
:mod:`avssl.data.shards`."""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from avssl.data.record import Record

__all__ = ["CRC_KEY", "FORMAT", "INDEX_NAME", "ShardIndex", "audio_key", "count_mismatch", "damaged",
           "expand_shards", "frame_keys", "is_url", "member_crc", "read_index", "sample_key", "shard_name"]

INDEX_NAME = "shards.json"
FORMAT = "avssl-shards/1"
#: The key, in a clip's JSON record, of its members' CRC-32 (``{"wav": n, "00.jpg": n, ...}``).
CRC_KEY = "crc32"


def shard_name(g: int) -> str:
    """The file name of shard ``g``."""
    return f"shard-{g:06d}.tar"


def sample_key(place: int) -> str:
    """The tar key of the clip at ``place`` in the input list."""
    return f"{place:09d}"


def frame_keys(keys) -> list[str]:
    """A sample's frame extensions (``00.jpg``, ...), in frame order."""
    return sorted(k for k in keys if k.split(".")[-1] in ("jpg", "jpeg", "png"))


def audio_key(keys) -> str | None:
    return next((k for k in ("wav", "flac") if k in keys), None)


def member_crc(meta: dict, ext: str) -> int | None:
    """The CRC-32 a clip's JSON record ``meta`` holds for its member ``ext`` (``"wav"``,
    ``"00.jpg"``, ...); None for shards written before CRCs were kept (not checked)."""
    sums = meta.get(CRC_KEY) if isinstance(meta, dict) else None
    want = sums.get(ext) if isinstance(sums, dict) else None
    return want if isinstance(want, int) else None


def damaged(data: bytes, want: int | None) -> str | None:
    """Why a member's ``data`` is not the bytes written (its CRC-32 is not ``want``, the one
    :func:`member_crc` read from its record), or None (also when ``want`` is None). Damage
    inside an image or a wav rarely stops it decoding (it decodes to garbage), hence the check."""
    if want is None:
        return None
    got = zlib.crc32(data)
    return None if got == want else f"damaged bytes (CRC-32 {got:08x}, {want:08x} when the shard was written)"


def count_mismatch(url: str, holds: int, lists: int) -> str:
    """The one line for a shard that holds another number of clips than its index lists."""
    return (f"shard {url}: holds {holds} clips, but the index lists {lists} (a stale {INDEX_NAME}, e.g. "
            f"after the shard was prepared again: rewrite it with avssl prepare --merge OUT)")


class ShardIndex:
    """``shards.json``: ``urls`` (absolute paths or URLs), ``clips`` per shard, ``classes`` (the
    sorted first labels of every clip), options; ``splits``: per shard, its clip count by split
    (``""``: clips without one); ``labels``: per split, the sorted ``firsts`` and ``labels``
    (every label) of its clips. Indexes merged before splits were counted have neither: all
    their clips then count as clips without a split."""

    def __init__(self, urls: Sequence[str], clips: Sequence[int], classes: Sequence[str] | None = None,
                 options: dict | None = None, splits: Sequence[dict] | None = None,
                 labels: dict | None = None) -> None:
        self.urls, self.clips = list(urls), [int(c) for c in clips]
        self.classes = list(classes) if classes is not None else None
        self.options = dict(options or {})
        self.splits = [dict(x) for x in splits] if splits is not None else [{"": c} for c in self.clips]
        self.labels = dict(labels) if labels is not None else {"": {"firsts": self.classes or [], "labels": []}}
        if len(self.splits) != len(self.urls):
            raise ValueError(f"a shard index with {len(self.urls)} shards has split counts for {len(self.splits)}")

    @property
    def total(self) -> int:
        return sum(self.clips)

    def clips_of(self, split: str | None) -> list[int]:
        """Per shard, the clips a ``split`` filter keeps: that split's and those without one
        (as :func:`avssl.data.manifest.read_manifest`'s filter); None keeps every clip."""
        if split is None:
            return list(self.clips)
        return [int(c.get(split, 0)) + int(c.get("", 0)) for c in self.splits]

    def label_records(self, split: str | None) -> list[Record]:
        """Stand-in records holding exactly the label sets of the clips ``split`` keeps (every
        first label, every other label): a pipeline computes its class list from them as it
        would from those clips' records (first labels, or every label)."""
        keep = [k for k in self.labels if split is None or k in (split, "")]
        firsts = sorted({f for k in keep for f in self.labels[k].get("firsts", [])})
        others = sorted({x for k in keep for x in self.labels[k].get("labels", [])} - set(firsts))
        if not firsts:
            return []
        return [Record(id=f"label:{f}", labels=[f]) for f in firsts] + \
            [Record(id=f"label:{x}", labels=[firsts[0], x]) for x in others]

    def subset(self, urls: Sequence[str], key=lambda u: u) -> ShardIndex:
        """The index of ``urls`` (each one of this index's, compared through ``key``)."""
        at = {key(u): i for i, u in enumerate(self.urls)}
        missing = [u for u in urls if key(u) not in at]
        if missing:
            raise ValueError(f"{len(missing)} shards are not in the index (e.g. {missing[0]})")
        pick = [at[key(u)] for u in urls]
        return ShardIndex(urls, [self.clips[i] for i in pick], self.classes, self.options,
                          [self.splits[i] for i in pick], self.labels)


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
        shards = data["shards"]
        splits = [s["splits"] for s in shards] if all("splits" in s for s in shards) else None
        return ShardIndex([resolve(s["file"]) for s in shards], [s["clips"] for s in shards],
                          data.get("classes"), data.get("options"), splits, data.get("labels"))
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
    try:
        return index.subset(urls, (lambda u: u) if remote else os.path.abspath)
    except ValueError as e:
        raise ValueError(f"data.train_shards: {cand}: {e}") from e
