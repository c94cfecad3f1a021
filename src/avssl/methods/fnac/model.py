"""FNAC: false-negative-aware contrastive localisation (Sun et al., CVPR 2023; docs/methods.md, FNAC).

EZ-VSL's networks (:class:`avssl.models.mil.MILLocaliser`: two ResNet-18s, a 1x1-conv visual and
a linear audio head, both L2-normalised; same init and order of random draws, so a seed gives
EZ-VSL's weights) with dropout on the visual layer4 map and on the pooled audio feature before
the heads, trained with the MIL contrastive loss plus three false-negative-aware terms
(:mod:`avssl.methods.fnac.losses`), which join after ``warmup_epochs`` epochs::

    img = normalize(img_proj(dropout_img(visual(frame))))   # (B, dim, 7, 7)
    aud = normalize(aud_proj(dropout_aud(audio(spec))))     # (B, dim)
    loss = nce + 100 fns1 + 100 tns + 100 fns2              # nce alone during the warmup

Test time: the authors' ``test.py`` runs two scorings: ``validate`` (the AV map upsampled
bilinear, align_corners=True, as EZ-VSL) and ``validate2`` (the AV map upsampled bicubic,
align_corners=False; the OGL map stays bilinear). ``FNACConfig.score`` picks the one
:meth:`FNAC.infer` gives; :meth:`FNAC.test_maps` gives either.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.methods.fnac import losses
from avssl.models.mil import MILLocaliser, check_mil_config, paired_maps, seeded_dropout

__all__ = ["FNACConfig", "FNAC", "SCORES"]

#: The test script's two scorings -> the AV map's (interpolation mode, align_corners).
SCORES = {"validate": ("bilinear", True), "validate2": ("bicubic", False)}


@dataclass(frozen=True)
class FNACConfig:
    """FNAC options; the defaults are the authors' released ones (``FNAC(tau=0.03, dim=512,
    dropout_img=0.9, dropout_aud=0)``, ``train_*.sh``: warmup 5, loss weights 100, ``test_*.sh``:
    ``--alpha 0.4``). The audio length is ``data.seconds`` (the authors' 3 s: the preset sets it).

    tau, dim, width, image_size, train_resize, imagenet_init, ogl_weights, ogl_alpha: as EZ-VSL's
        (:class:`avssl.methods.ezvsl.EZVSLConfig`).
    dropout_img / dropout_aud: dropout on the visual layer4 map / the pooled audio feature.
    warmup_epochs: epochs trained on ``nce`` alone (the terms join when ``epoch >= warmup``).
    fns1_weight, tns_weight, fns2_weight: the weights of the false-negative-aware terms.
    fg_threshold: the foreground cut of the min-max normalised paired map (``tns``).
    freq_mask_width / time_mask_width: the training spectrogram masks' maximum widths (0: off),
        with the authors' quirks (docs/methods.md, FNAC).
    score: ``validate`` or ``validate2``, the test scoring :meth:`FNAC.infer` follows.
    """

    tau: float = 0.03
    dim: int = 512
    width: int = 64
    image_size: int = 224
    train_resize: int = 246
    dropout_img: float = 0.9
    dropout_aud: float = 0.0
    warmup_epochs: int = 5
    fns1_weight: float = 100.0
    tns_weight: float = 100.0
    fns2_weight: float = 100.0
    fg_threshold: float = 0.6
    freq_mask_width: int = 10
    time_mask_width: int = 10
    imagenet_init: str | None = None
    ogl_weights: str | None = None
    ogl_alpha: float = 0.4
    score: str = "validate"

    def __post_init__(self) -> None:
        check_mil_config(self, "fnac")
        if self.warmup_epochs < 0 or self.freq_mask_width < 0 or self.time_mask_width < 0:
            raise ValueError("warmup_epochs and the mask widths must be >= 0")
        if self.score not in SCORES:
            raise ValueError(f"fnac.score must be one of {sorted(SCORES)}, got {self.score!r}")


class FNAC(MILLocaliser):
    """FNAC model + losses. Frames (B, 3, S, S) ImageNet-normalised; spectrograms (B, 1, 257, T)
    (``log(PSD + 1e-7) / 12``, :func:`avssl.data.audio.scipy_logspec`).

    ``epoch`` (not in the state dict) is the current training epoch (0-based), set by the
    pipeline's ``on_epoch_end``; the false-negative-aware terms count from ``warmup_epochs`` on.
    """

    title, section = "FNAC", "fnac"

    def __init__(self, config: FNACConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or FNACConfig()
        self.build()  # the same random draws as EZ-VSL's; dropouts draw none
        self.img_dropout = nn.Dropout(p=c.dropout_img)
        self.aud_dropout = nn.Dropout(p=c.dropout_aud)
        self.epoch = 0

    @property
    def warm(self) -> bool:
        """Past the warmup: the false-negative-aware terms are on."""
        return self.epoch >= self.config.warmup_epochs

    def encode_image(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, S, S) -> L2-normalised visual map (B, dim, S/32, S/32), dropout in training."""
        return F.normalize(self.img_proj(seeded_dropout(self.img_dropout, self.visual(image), generator)), dim=1)

    def encode_audio(self, spec: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 1, F, T) -> L2-normalised audio embedding (B, dim), dropout in training."""
        return F.normalize(self.aud_proj(seeded_dropout(self.aud_dropout, self.audio(spec), generator)), dim=1)

    def step_outputs(self, image: Tensor, spec: Tensor, generator: torch.Generator | None = None
                     ) -> dict[str, Tensor]:
        """``img``, ``aud``, ``Slogits``, the terms ``nce`` / ``fns1`` / ``tns`` / ``fns2``, ``loss`` (the
        weighted total of the current epoch) and ``Savl`` (B, h, w, no grad)."""
        c = self.config
        img, aud = self.encode_image(image, generator), self.encode_audio(spec, generator)
        terms, slogits = losses.fnac_losses(img, aud, c.tau, c.fg_threshold)
        total = losses.fnac_total(terms, (c.fns1_weight, c.tns_weight, c.fns2_weight), self.warm)
        return {"img": img, "aud": aud, "Slogits": slogits, **terms, "loss": total,
                "Savl": paired_maps(slogits.detach())}

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training entry point: ``batch["image"]``, ``batch["spec"]`` -> ``{"loss", "nce", "fns1", "tns", "fns2"}``."""
        out = self.step_outputs(batch["image"], batch["spec"], generator)
        return {k: out[k] for k in ("loss", *losses.TERMS)}

    @torch.no_grad()
    def test_maps(self, image: Tensor, spec: Tensor, size: int | tuple[int, int] | None = None,
                  score: str | None = None) -> dict[str, Tensor]:
        """The test script's maps (:meth:`MILLocaliser.test_maps`) for scoring ``score``
        (``validate`` / ``validate2``; default ``config.score``)."""
        mode, align = SCORES[score or self.config.score]
        return super().test_maps(image, spec, size, mode, align)

    @torch.no_grad()
    def infer(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Evaluation outputs: ``heatmap`` = Savl (B, h, w) in units of 1/tau, or with OGL the AV+OGL
        map of ``config.score`` at the frame's size; ``audio`` / ``visual`` (B, dim) as EZ-VSL's."""
        img, aud = self.encode_image(image), self.encode_audio(spec)
        mode, align = SCORES[self.config.score]
        return {"heatmap": self.heatmap(image, self.av_map(img, aud), mode, align), "audio": aud,
                "visual": F.normalize(img.mean(dim=(2, 3)), dim=1)}
