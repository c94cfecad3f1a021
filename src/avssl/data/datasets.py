"""Torch data sets over manifest records: one frame + the waveform per clip (SSL-TIE input).

The loader does only decoding and fixed-size resizing; spectrograms and random augmentation
run batched on the training device afterwards (see :mod:`avssl.methods.ssltie.pipeline`).

A sample is a dict::

    {"id": str, "image": uint8 (3, S, S), "wave": float32 (N,), "num_samples": int, "label": int,
     "target": float32 (C,), "sample_rate": int}

plus, with ``full_frame=True``, ``"full"``: the ORIGINAL frame uint8 (3, H, W) at its own size
(for training crops drawn on it, as the authors' loaders do; :func:`collate` zero-pads these to
the batch's largest and adds ``"full_hw"`` (B, 2)).

* ``image``: a raw video (``Record.video``) gives the frame displayed at ``frame_time`` (config),
  else at ``extra["annotation_time"]``, else at the clip middle; a pre-extracted record
  (``frames`` + ``audio``) gives ``frames[frame_index]`` (default: the middle file). The
  ORIGINAL frame is resized so that its short side is ``S`` and centre-cropped to ``S x S``
  (:func:`resize_crop`; default the authors' PIL bicubic test transform, exactly), as both
  methods' test loaders do; boxes stay on the centre-cropped map, as in the authors' scoring.
  With ``random_frames=K`` (EquiAV's training, docs/methods.md §2.1) a key ``(index, draw)``
  from the training sampler picks the frame instead: one of the record's pre-extracted frames,
  or of ``K`` evenly spaced times of a raw video (:func:`avssl.data.decode.evenly_spaced_times`,
  the CAV-MAE extraction), uniformly from a generator seeded with ``draw``; an ``int`` key keeps
  the fixed frame.
* ``wave``: mono, at the native rate or resampled to ``sample_rate``; tiled/cut to exactly
  ``seconds * rate`` samples (:func:`avssl.data.audio.tile_to_duration`; training sets first
  keep only ``keep_seconds``). With ``audio_pad="zero"`` (EquiAV: the original pads the
  *fbank*, not the waveform) the waveform is cut to that length or zero-padded at the end, and
  ``num_samples`` keeps its true length so the transform can drop the padded frames; with
  ``"tile"`` ``num_samples`` is the full length. All clips of a batch must share one rate
  (checked by :func:`collate`).
* ``label``: index of the record's first label in ``classes`` (-1 when it has none);
  ``target``: multi-hot over ``classes`` of all the record's labels (multi-label fine-tuning).

Decoding failures raise :class:`avssl.data.decode.MediaError` naming the file. With
``on_error="skip"`` every clip is decoded once at construction; failures are logged, counted
(``self.skipped``: ``[(id, reason)]``) and dropped. Nothing is ever replaced by a fake sample.
``cache_in_memory`` also decodes everything at construction (threads) and keeps the samples
(with ``random_frames``, every candidate frame: K times the frame memory).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from avssl.data import decode
from avssl.data.audio import tile_to_duration
from avssl.data.batch import MixedRateError, batch_rate, collate, collate_mixed_rates, split_by_rate
from avssl.data.manifest import Record
from avssl.data.shard_access import SHARD_MEMBERS, member_bytes

logger = logging.getLogger(__name__)

__all__ = ["AVFrameAudioDataset", "collate", "collate_mixed_rates", "batch_rate", "split_by_rate", "MixedRateError",
           "resize_crop", "resize_short", "class_list", "FRAME_RESIZE"]


def _decoder_threads() -> int:
    """1 inside a DataLoader worker (its siblings use the other cores; FFmpeg's frame threads
    there only add overhead), else 0: FFmpeg's choice."""
    from torch.utils.data import get_worker_info

    return 1 if get_worker_info() is not None else 0


def _read_frame_file(r: Record, path: str) -> np.ndarray:
    """One of ``r.frames``: a file, or a member of a shard (records of a ``shards.json``)."""
    if SHARD_MEMBERS in r.extra:
        return decode.read_image_bytes(member_bytes(r, path), path)
    return decode.read_image(path)


def class_list(records: Sequence[Record]) -> list[str]:
    """Sorted distinct first labels of ``records`` (the label index space)."""
    return sorted({r.labels[0] for r in records if r.labels})


#: Loader frame resizes (:func:`resize_crop`); "pil_bicubic" is the authors' test transform.
FRAME_RESIZE = ("pil_bicubic", "torch_bilinear")


def resize_short(frame: np.ndarray, size: int, method: str = "pil_bicubic") -> torch.Tensor:
    """uint8 ``(H, W, 3)`` ORIGINAL frame -> uint8 ``(3, h, w)`` with its short side ``size``, no crop:
    the resize of :func:`resize_crop` (``"pil_bicubic"``: PIL's antialiased bicubic, long side
    ``int(size * long / short)``, no resize when the short side already is ``size``;
    ``"torch_bilinear"``: antialiased bilinear in torch, rounded sizes). Full-frame localisation
    (:mod:`avssl.infer`) feeds it to the model whole."""
    if method not in FRAME_RESIZE:
        raise ValueError(f"frame resize must be one of {FRAME_RESIZE}, got {method!r}")
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    if method == "pil_bicubic":
        from PIL import Image

        if min(h, w) != size:
            nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
            frame = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BICUBIC))
        return torch.from_numpy(np.array(frame, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = torch.from_numpy(frame if frame.flags.writeable else frame.copy()).permute(2, 0, 1)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) == (h, w):
        return x.contiguous()
    y = F.interpolate(x[None].float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    return y.round_().clamp_(0, 255).to(torch.uint8).contiguous()


def resize_crop(frame: np.ndarray, size: int, method: str = "pil_bicubic") -> torch.Tensor:
    """uint8 ``(H, W, 3)`` ORIGINAL frame -> uint8 ``(3, size, size)``: short side to ``size``
    (:func:`resize_short`), centre crop.

    ``"pil_bicubic"`` is what SSL-TIE's and EquiAV's (CAV-MAE's) test loaders do,
    ``transforms.Resize(size, BICUBIC)`` on the PIL image then ``CenterCrop(size)``, reproduced
    exactly: PIL's antialiased bicubic resize to short side ``size`` and long side
    ``int(size * long / short)`` (torchvision truncates), no resize when the short side already
    is ``size``, crop offsets ``int(round((n - size) / 2))``, PIL's rounded and clamped uint8
    output. ``ToTensor`` + normalisation of that uint8 image then gives the authors' tensor.
    ``"torch_bilinear"``: antialiased bilinear in torch with rounded sizes, crop offsets
    ``(n - size) // 2`` (the earlier loader; kept for comparison: it moves SSL-TIE heatmaps by up
    to ~1% of their maximum).
    """
    y = resize_short(frame, size, method)
    h, w = y.shape[-2:]
    if method == "pil_bicubic":
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    return y[:, top:top + size, left:left + size].contiguous()


class AVFrameAudioDataset(Dataset):
    """One frame and the waveform of each record (see the module docstring for the sample).

    Args:
        records: manifest records (raw ``video`` or ``frames`` + ``audio``).
        image_size: side ``S`` of the returned square frame.
        seconds: audio length after tiling/cutting.
        sample_rate: None = native rate; else resample.
        video_sample_rate: with ``sample_rate`` None, the rate of audio decoded straight from a
            ``video`` record (None: its native rate). EquiAV sets 16000: its authors' data are
            extracted from the videos at 16 kHz (CAV-MAE's preprocessing), while a prepared wav
            keeps its own rate, as their loader does.
        keep_seconds: keep only the first seconds before tiling (e.g. Flickr training: 4).
        frame_time / frame_index: which frame (None: annotation time / clip middle / middle file).
        classes: the label list (default :func:`class_list` of ``records``).
        cache_in_memory: decode everything once at construction and keep it.
        on_error: "raise" or "skip" (pre-screen at construction).
        workers: threads for the construction-time decoding.
        audio_pad: "tile" (SSL-TIE: tile short audio) or "zero" (cut / zero-pad, true length kept).
        frame_resize: :data:`FRAME_RESIZE` method of :func:`resize_crop`.
        full_frame: also return the original frame (``"full"``).
        random_frames: 0 (a fixed frame) or K: ``(index, draw)`` keys pick a random frame
            (module docstring).
    """

    def __init__(self, records: Sequence[Record], image_size: int = 224, seconds: float = 10.0,
                 sample_rate: int | None = None, keep_seconds: float | None = None,
                 frame_time: float | None = None, frame_index: int | None = None,
                 classes: Sequence[str] | None = None, cache_in_memory: bool = False,
                 on_error: str = "raise", workers: int = 2, audio_pad: str = "tile",
                 frame_resize: str = "pil_bicubic", full_frame: bool = False, random_frames: int = 0,
                 video_sample_rate: int | None = None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if audio_pad not in ("tile", "zero"):
            raise ValueError(f"audio_pad must be 'tile' or 'zero', got {audio_pad!r}")
        if frame_resize not in FRAME_RESIZE:
            raise ValueError(f"frame_resize must be one of {FRAME_RESIZE}, got {frame_resize!r}")
        if random_frames < 0:
            raise ValueError(f"random_frames must be >= 0, got {random_frames}")
        self.audio_pad, self.frame_resize, self.full_frame = audio_pad, frame_resize, full_frame
        self.random_frames = int(random_frames)
        self.records = list(records)
        self.image_size, self.seconds, self.sample_rate = image_size, seconds, sample_rate
        self.video_sample_rate = video_sample_rate
        self.keep_seconds, self.frame_time, self.frame_index = keep_seconds, frame_time, frame_index
        self.classes = list(classes) if classes is not None else class_list(self.records)
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self.skipped: list[tuple[str, str]] = []
        self._cache: list[dict] | None = None
        if cache_in_memory or on_error == "skip":
            self._decode_all(on_error, workers, keep=cache_in_memory)

    def _decode_all(self, on_error: str, workers: int, keep: bool) -> None:
        def attempt(i: int) -> dict | decode.MediaError:
            try:
                return self._load_candidates(i) if keep and self.random_frames else self.load(i)
            except decode.MediaError as e:
                if on_error == "raise":
                    raise
                return e

        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(attempt, range(len(self.records))))
        kept = [(r, s) for r, s in zip(self.records, results, strict=True) if not isinstance(s, decode.MediaError)]
        self.skipped = [(r.id, str(s)) for r, s in zip(self.records, results, strict=True)
                        if isinstance(s, decode.MediaError)]
        for cid, why in self.skipped:
            logger.warning("skipping clip %s: %s", cid, why)
        if self.skipped:
            logger.warning("skipped %d of %d clips that failed to decode", len(self.skipped), len(self.records))
        self.records = [r for r, _ in kept]
        if keep:
            self._cache = [s for _, s in kept]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, draw = key if isinstance(key, tuple) else (key, None)
        choice = None
        if draw is not None and self.random_frames:
            gen = torch.Generator().manual_seed(int(draw))
            choice = int(torch.randint(self.frame_count(index), (1,), generator=gen))
        if self._cache is None:
            return self.load(index, choice)
        sample = self._cache[index]
        out = {k: v for k, v in sample.items() if k not in ("images", "fulls")}
        if choice is not None and "images" in sample:
            out["image"] = sample["images"][choice]
            if "fulls" in sample:
                out["full"] = sample["fulls"][choice]
        return out

    def frame_count(self, index: int) -> int:
        """How many frames a random draw chooses from: the record's pre-extracted frames, or
        ``random_frames`` evenly spaced times of a raw video."""
        r = self.records[index]
        return self.random_frames if r.video else max(1, len(r.frames))

    def _load_candidates(self, index: int) -> dict:
        """A cached sample (its fixed frame as ``image``) also holding every candidate frame:
        ``images`` (K, 3, S, S) (and ``fulls``)."""
        frames = self._candidate_frames(self.records[index])
        sample = self.load(index)
        sample["images"] = torch.stack([resize_crop(f, self.image_size, self.frame_resize) for f in frames])
        if self.full_frame:
            sample["fulls"] = [torch.tensor(f, dtype=torch.uint8).permute(2, 0, 1).contiguous() for f in frames]
        return sample

    def _video_candidate_times(self, duration: float) -> list[float]:
        """The ``random_frames`` evenly spaced times a raw video's random frame is drawn from."""
        return decode.evenly_spaced_times(duration, self.random_frames)

    def _candidate_frames(self, r: Record) -> list[np.ndarray]:
        if r.video:
            return list(decode.read_frames(r.video, self._video_candidate_times, threads=_decoder_threads()))
        if not r.frames:
            raise decode.MediaError(r.audio or r.id, f"record {r.id!r} has neither a video nor frames")
        return [_read_frame_file(r, f) for f in r.frames]

    def label_of(self, record: Record) -> int:
        return self._class_index.get(record.labels[0], -1) if record.labels else -1

    def target_of(self, record: Record) -> torch.Tensor:
        """Multi-hot (C,) float32 of the record's labels that are in ``classes``."""
        target = torch.zeros(len(self.classes), dtype=torch.float32)
        idx = [self._class_index[c] for c in record.labels if c in self._class_index]
        if idx:
            target[idx] = 1.0
        return target

    def _frame(self, r: Record, choice: int | None = None) -> np.ndarray:
        if r.video:
            t = self.frame_time if self.frame_time is not None else r.extra.get("annotation_time")
            if choice is not None:
                times = lambda d: self._video_candidate_times(d)[choice: choice + 1]  # noqa: E731
            else:  # the clip middle, placed by the duration the reader finds (no separate probe)
                times = [float(t)] if t is not None else (lambda d: [d / 2.0])
            return decode.read_frames(r.video, times, threads=_decoder_threads())[0]
        if not r.frames:
            raise decode.MediaError(r.audio or r.id, f"record {r.id!r} has neither a video nor frames")
        k = choice if choice is not None else self.frame_index if self.frame_index is not None else len(r.frames) // 2
        return _read_frame_file(r, r.frames[min(k, len(r.frames) - 1)])

    def _wave(self, r: Record) -> tuple[np.ndarray, int]:
        if r.audio and SHARD_MEMBERS in r.extra:
            return decode.read_wav_bytes(member_bytes(r, r.audio), r.audio, self.sample_rate)
        if r.audio:
            return decode.read_wav(r.audio, self.sample_rate)
        if r.video:
            return decode.read_audio(r.video, self.video_rate)
        raise decode.MediaError(r.id, f"record {r.id!r} has no audio")

    @property
    def video_rate(self) -> int | None:
        """The rate audio read straight from a video is given at (None: its native rate)."""
        return self.sample_rate or self.video_sample_rate

    def load(self, index: int, choice: int | None = None) -> dict:
        """Decode record ``index`` (no cache) with its fixed frame or candidate ``choice``; raises
        MediaError naming the file on failure."""
        r = self.records[index]
        frame = self._frame(r, choice)
        wave, sr = self._wave(r)
        return self.sample(r, frame, wave, sr)

    def sample(self, r: Record, frame: np.ndarray, wave: np.ndarray, sr: int) -> dict:
        """The sample of record ``r`` from its decoded ORIGINAL frame uint8 ``(H, W, 3)`` and
        mono waveform at rate ``sr`` (also what :class:`avssl.data.shards.ShardStream` calls)."""
        image = resize_crop(frame, self.image_size, self.frame_resize)
        out = {"id": r.id, "image": image, **self.audio_fields(wave, sr),
               "label": self.label_of(r), "target": self.target_of(r),
               "frame_hw": (int(frame.shape[0]), int(frame.shape[1]))}  # where the centre crop was cut
        if self.full_frame:
            out["full"] = torch.tensor(frame, dtype=torch.uint8).permute(2, 0, 1).contiguous()
        return out

    def audio_fields(self, wave: np.ndarray, sr: int) -> dict:
        """A sample's audio keys from a decoded mono waveform at rate ``sr``: ``wave`` (tiled or
        cut/zero-padded to ``seconds``), ``num_samples``, ``sample_rate``."""
        wave_t = torch.from_numpy(wave)
        if self.audio_pad == "tile":
            wave_t = tile_to_duration(wave_t, sr, self.seconds, self.keep_seconds)
            n = wave_t.shape[-1]
        else:
            if self.keep_seconds is not None:
                wave_t = wave_t[: int(sr * self.keep_seconds)]
            target = int(self.seconds * sr)
            n = min(target, wave_t.shape[-1])
            wave_t = F.pad(wave_t[:target], (0, target - n))
        return {"wave": wave_t.contiguous(), "num_samples": int(n), "sample_rate": int(sr)}

    def audio_of(self, index: int) -> dict:
        """The audio keys of record ``index``'s sample (``wave``, ``num_samples``, ``sample_rate``)
        without decoding its frame (from the cache when there is one): what the swap control
        (:class:`avssl.data.controls.AudioControlDataset`) gives another clip."""
        if self._cache is not None:
            s = self._cache[index]
            return {k: s[k] for k in ("wave", "num_samples", "sample_rate")}
        return self.audio_fields(*self._wave(self.records[index]))
