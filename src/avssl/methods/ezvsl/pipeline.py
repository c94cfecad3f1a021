"""EZ-VSL's data side: the loader's data set, the batched on-device transform, and inference.

The authors' loader (docs/methods.md, EZ-VSL section), reproduced:

* audio: the **centre** ``seconds`` (3 s) of each clip at its native rate, as 16-bit PCM over
  32767, clipped to [-1, 1], tiled when shorter; then scipy's ``spectrogram(x, fs, nperseg=512,
  noverlap=274)`` (periodic Tukey(0.25) window, hop 238, per-segment mean removed, one-sided
  PSD density) and ``log(S + 1e-7) / 12``, in float64, cast to float32 (:func:`ezvsl_logspec`,
  batched on the device). The data set cuts the centre (:class:`EZVSLDataset`); the transform
  computes the spectrograms. The front-end (:func:`avssl.data.audio.centre_cut`,
  :func:`avssl.data.audio.scipy_logspec`) and the crop (:func:`avssl.augment.crop.random_crop_flip`)
  are shared with FNAC; their EZ-VSL names are re-exported here.
* frames: evaluation ``Resize((S, S), BICUBIC)`` of the original frame (both sides: the aspect
  ratio is not kept) in the loader, PIL-exact; training ``Resize(R, BICUBIC)`` of the short side
  (R = 246 for S = 224) in the loader, then ``RandomCrop(S)`` and ``RandomHorizontalFlip`` drawn
  from the step's generator and applied batched on the device, then ImageNet normalisation.

The waveform the loader gives is float32 ``int16 / 32768`` (soundfile's reading of 16-bit PCM);
the front-end rounds it back to the 16-bit grid (exact for 16-bit files; a stereo downmix is
rounded as libswresample's ``s16p`` mono conversion does, to within its 0.5 LSB) and divides by
32767 as the authors' ``np.iinfo(int16).max`` does.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from avssl.augment.crop import random_crop_flip
from avssl.data.audio import (
    LOGSPEC_EPS,
    SCIPY_NOVERLAP,
    SCIPY_NPERSEG,
    centre_cut,
    scipy_logspec,
    tukey_window,
)
from avssl.data.manifest import Record
from avssl.models.mil_pipeline import MILBatchTransform, MILDataset, mil_dataset, square_frame

__all__ = ["EZVSLDataset", "EZVSLBatchTransform", "ezvsl_dataset", "ezvsl_infer", "ezvsl_logspec",
           "centre_cut", "tukey_window", "square_frame", "random_crop_flip"]

NPERSEG, NOVERLAP, LOG_EPS = SCIPY_NPERSEG, SCIPY_NOVERLAP, LOGSPEC_EPS


# ----------------------------------------------------------------------------- audio
# the front-end is the EZ-VSL family's (avssl.data.audio, shared with FNAC); EZ-VSL's names kept
ezvsl_logspec = scipy_logspec


# ----------------------------------------------------------------------------- data set
#: EZ-VSL's data set: the EZ-VSL family's (:class:`avssl.models.mil.MILDataset`, shared with FNAC
#: and SLAVC): ``image`` the (S, S) PIL-bicubic square, ``full`` the short side resized to
#: ``train_resize`` for training sets, ``wave`` the centre ``seconds`` (:func:`centre_cut`).
EZVSLDataset = MILDataset


def ezvsl_dataset(records: Sequence[Record], cfg, train: bool, classes: Sequence[str] | None = None) -> MILDataset:
    """The data set of a :class:`avssl.train_config.TrainConfig` ``cfg`` (its ``data`` and ``ezvsl`` parts).

    The audio length is ``data.seconds`` (3 s: the authors'); frames are ``ezvsl.image_size`` squares (and the
    short-side ``train_resize`` frame for training sets)."""
    return mil_dataset(records, cfg, "ezvsl", train, classes)


# ----------------------------------------------------------------------------- transform
class EZVSLBatchTransform(MILBatchTransform):
    """EZ-VSL's batch transform: the family's (:class:`avssl.models.mil.MILBatchTransform`)."""

    section = "ezvsl"


def ezvsl_infer(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Evaluation outputs of an EZ-VSL model for one batch (:meth:`EZVSL.infer`)."""
    return model.infer(inputs["image"], inputs["spec"])

