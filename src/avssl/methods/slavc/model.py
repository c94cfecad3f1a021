"""SLAVC: a closer look at weakly-supervised audio-visual source localisation (Mo & Morgado,
NeurIPS 2022; docs/methods.md, SLAVC section).

The EZ-VSL family's two ResNet-18s (:mod:`avssl.models.mil`) with **two** heads per modality
(``img_proj1/2``: 1x1 convs, ``aud_proj1/2``: linear; all L2-normalised), a strong dropout on the
visual layer4 map (0.9) and **momentum (EMA) copies** of both encoders and all four heads
(``momentum_*``) that give the loss's targets::

    p_m <- m p_m + (1 - m) p      # every training forward, before the targets (parameters only)
    loss = slavc_loss(online features, momentum features)     (losses.py)
    Savl = (<img1, aud1> + <img2, aud2>) / (2 tau)            # (B, h, w); momentum features with mom_eval

The targets pass through the same dropout modules as the online features (the authors' code),
and the momentum networks run in the model's mode (batch statistics in training; their BN
running statistics are their own, never copied). Test time (the authors' ``test.py``): the map
upsampled bicubically (align_corners=True), scored ``s_av = (Savl + 1/tau) / (2/tau)`` in [0, 1];
object-guided localisation (OGL, the family's frozen ImageNet network) scores ``s_obj = obj / 2.5``
and mixes ``s_av_obj = alpha s_av + (1 - alpha) s_obj``; confidence is the mean of the top
quarter of a score map; the prediction is the score with the absolute threshold ``pred_threshold``
or, with ``relative_prediction``, its min-max normalisation with the ``pred_size`` quantile.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.methods.slavc import losses
from avssl.models.mil import (
    MILLocaliser,
    check_mil_config,
    init_projection,
    minmax,
    seeded_dropout,
    upsample,
)
from avssl.models.resnet import AudioResNet18, ResNet18Trunk, init_weights, load_imagenet_visual

__all__ = ["SLAVCConfig", "SLAVC", "VISUAL_PARTS", "AUDIO_PARTS", "momentum_update_", "confidence"]

#: The online modules with a momentum copy ``momentum_<name>``, per modality (EMA rates m_img / m_aud).
VISUAL_PARTS = ("visual", "img_proj1", "img_proj2")
AUDIO_PARTS = ("audio", "aud_proj1", "aud_proj2")


@dataclass(frozen=True)
class SLAVCConfig:
    """SLAVC options; the defaults are the authors' released ones (``train_vggsound144k.sh``:
    tau 0.03, dim 512, ``--dropout_img 0.9 --dropout_aud 0 --m_img 0.999 --m_aud 0.999``;
    ``test.py`` as the test scripts run it: ``--alpha 0.9``, absolute threshold 0.5, online
    features). The audio length is ``data.seconds`` (the authors' centre 3 s: the preset sets it).

    tau, dim, width, image_size, train_resize, imagenet_init, ogl_weights: as EZ-VSL's
        (:class:`avssl.methods.ezvsl.EZVSLConfig`); imagenet_init also starts the momentum copy.
    dropout_img / dropout_aud: dropout on the visual layer4 map / the pooled audio feature
        (online and target features alike).
    momentum_img / momentum_aud: the EMA rates of the visual / audio momentum networks.
    mom_eval: test maps (and the logged training map) from the momentum features
        (``--use_mom_eval``; the training script passes it, the test scripts do not).
    relative_prediction: ``--relative_prediction``: min-max normalised scores and the
        ``pred_size`` quantile as threshold, instead of the raw scores and ``pred_threshold``.
    pred_threshold / pred_size: ``--pred_thr`` 0.5 / ``--pred_size`` 0.5.
    ogl_alpha: the AV weight of the AV+OGL score (``--alpha``, 0.9 in the test scripts).
    """

    tau: float = 0.03
    dim: int = 512
    width: int = 64
    image_size: int = 224
    train_resize: int = 246
    dropout_img: float = 0.9
    dropout_aud: float = 0.0
    momentum_img: float = 0.999
    momentum_aud: float = 0.999
    mom_eval: bool = False
    relative_prediction: bool = False
    pred_threshold: float = 0.5
    pred_size: float = 0.5
    imagenet_init: str | None = None
    ogl_weights: str | None = None
    ogl_alpha: float = 0.9

    def __post_init__(self) -> None:
        check_mil_config(self, "slavc")
        if not (0.0 <= self.momentum_img <= 1.0 and 0.0 <= self.momentum_aud <= 1.0):
            raise ValueError(f"momenta must be in [0, 1], got {self.momentum_img}, {self.momentum_aud}")
        if not 0.0 <= self.pred_size < 1.0:  # (ogl_alpha: check_mil_config)
            raise ValueError(f"pred_size must be in [0, 1), got {self.pred_size}")


@torch.no_grad()
def momentum_update_(target: nn.Module, source: nn.Module, m: float) -> None:
    """In place ``p_t <- m p_t + (1 - m) p_s`` over the paired ``parameters()`` (not buffers)."""
    tgt, src = list(target.parameters()), list(source.parameters())
    if len(tgt) != len(src):
        raise ValueError(f"momentum and online modules differ: {len(tgt)} vs {len(src)} parameters")
    torch._foreach_mul_(tgt, m)
    torch._foreach_add_(tgt, src, alpha=1.0 - m)


def confidence(scores: Tensor) -> Tensor:
    """(B, ...) score maps -> (B,) the mean of each map's top quarter (``ceil(n / 4)`` values, the
    authors' ``sort(s)[-n//4:]``), accumulated in float64."""
    flat = scores.flatten(1)
    k = -(-flat.shape[1] // 4)
    return flat.double().topk(k, dim=1).values.mean(dim=1)


class SLAVC(MILLocaliser):
    """SLAVC model + loss. Frames (B, 3, S, S) ImageNet-normalised; spectrograms (B, 1, 257, T)
    (``log(PSD + 1e-7) / 12``, :func:`avssl.data.audio.scipy_logspec`)."""

    title, section = "SLAVC", "slavc"

    def __init__(self, config: SLAVCConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or SLAVCConfig()
        ch = 8 * c.width
        # the authors' order: visual, its dropout and heads; audio, its heads and dropout; re-init
        self.visual = ResNet18Trunk(in_channels=3, width=c.width, layer4_stride=2)
        init_weights(self.visual, "torchvision")
        self.img_dropout = nn.Dropout(p=c.dropout_img)
        self.img_proj1 = nn.Conv2d(ch, c.dim, kernel_size=1)
        self.img_proj2 = nn.Conv2d(ch, c.dim, kernel_size=1)
        self.audio = AudioResNet18(width=c.width, layer4_stride=2)
        self.aud_proj1 = nn.Linear(ch, c.dim)
        self.aud_proj2 = nn.Linear(ch, c.dim)
        self.aud_dropout = nn.Dropout(p=c.dropout_aud)
        init_weights(self.audio, "ssltie")
        for head in (self.img_proj1, self.aud_proj1, self.img_proj2, self.aud_proj2):
            init_projection(head)
        if c.imagenet_init is not None:
            load_imagenet_visual(self.visual, c.imagenet_init)
        # the momentum copies start as the online networks (the authors copy the parameters; the
        # buffers are still the fresh ones then, so a full copy is the same), never trained
        for name in (*VISUAL_PARTS, *AUDIO_PARTS):
            setattr(self, f"momentum_{name}", copy.deepcopy(getattr(self, name)).requires_grad_(False))
        self.build_ogl()

    # -- momentum ------------------------------------------------------------------------------
    @torch.no_grad()
    def update_momentum(self) -> None:
        """One EMA step of every momentum module (visual parts at m_img, audio parts at m_aud)."""
        for parts, m in ((VISUAL_PARTS, self.config.momentum_img), (AUDIO_PARTS, self.config.momentum_aud)):
            for name in parts:
                momentum_update_(getattr(self, f"momentum_{name}"), getattr(self, name), m)

    def online_parameters(self) -> list[nn.Parameter]:
        """The trained parameters (the momentum copies excluded)."""
        return [p for n, p in self.named_parameters() if not n.startswith("momentum_")]

    # -- features ------------------------------------------------------------------------------
    def image_features(self, image: Tensor, momentum: bool = False, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) -> the two L2-normalised visual maps (B, dim, S/32, S/32), dropout in training."""
        pre = "momentum_" if momentum else ""
        x = seeded_dropout(self.img_dropout, getattr(self, f"{pre}visual")(image), generator)
        return (F.normalize(getattr(self, f"{pre}img_proj1")(x), dim=1),
                F.normalize(getattr(self, f"{pre}img_proj2")(x), dim=1))

    def audio_features(self, spec: Tensor, momentum: bool = False, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
        """(B, 1, F, T) -> the two L2-normalised audio embeddings (B, dim), dropout in training."""
        pre = "momentum_" if momentum else ""
        x = seeded_dropout(self.aud_dropout, getattr(self, f"{pre}audio")(spec), generator)
        return (F.normalize(getattr(self, f"{pre}aud_proj1")(x), dim=1),
                F.normalize(getattr(self, f"{pre}aud_proj2")(x), dim=1))

    def encode_image(self, image: Tensor) -> Tensor:
        """The first head's visual map (the family's single-map interface)."""
        return self.image_features(image, self.config.mom_eval)[0]

    def encode_audio(self, spec: Tensor) -> Tensor:
        """The first head's audio embedding (the family's single-embedding interface)."""
        return self.audio_features(spec, self.config.mom_eval)[0]

    def pair_map(self, img: Sequence[Tensor], aud: Sequence[Tensor]) -> Tensor:
        """``Savl`` (B, h, w): the mean of the two heads' paired maps, in units of 1/tau."""
        return (self.av_map(img[0], aud[0]) + self.av_map(img[1], aud[1])) / 2

    def step_outputs(self, image: Tensor, spec: Tensor, generator: torch.Generator | None = None,
                     update: bool | None = None) -> dict[str, Tensor]:
        """The authors' forward: online features, the EMA step (``update``, default: in training),
        the momentum targets (no grad), the loss terms (:func:`losses.slavc_loss`) and ``Savl``
        (B, h, w, no grad; momentum features with ``mom_eval``). Also ``img``/``aud``(``_trg``)."""
        img = self.image_features(image, False, generator)
        aud = self.audio_features(spec, False, generator)
        with torch.no_grad():
            if self.training if update is None else update:
                self.update_momentum()
            img_t = self.image_features(image, True, generator)
            aud_t = self.audio_features(spec, True, generator)
        out = losses.slavc_loss(*img, *aud, *img_t, *aud_t, tau=self.config.tau)
        with torch.no_grad():
            out["Savl"] = self.pair_map(img_t, aud_t) if self.config.mom_eval else self.pair_map(img, aud)
        return {**out, "img": img, "aud": aud, "img_trg": img_t, "aud_trg": aud_t}

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training entry point (one EMA step in training mode): ``{"loss", "loss_i2a", "loss_a2i"}``."""
        out = self.step_outputs(batch["image"], batch["spec"], generator)
        return {k: out[k] for k in ("loss", *losses.TERMS)}

    # -- test time -----------------------------------------------------------------------------
    @torch.no_grad()
    def test_maps(self, image: Tensor, spec: Tensor, size: int | tuple[int, int] | None = None,
                  relative: bool | None = None, mom_eval: bool | None = None, mode: str = "bicubic",
                  align_corners: bool = True) -> dict[str, Tensor]:
        """The test script's maps at ``size`` (default the frame's) for the four variants
        (``relative``: ``--relative_prediction``, ``mom_eval``: ``--use_mom_eval``; default the config's).

        ``av_in`` = Savl, ``av`` its upsampling, ``s_av`` its score; with OGL also ``obj_in``,
        ``obj`` (bicubic, align_corners=True), ``s_obj``, ``s_av_obj``. For each score ``e``:
        ``pred_<e>`` (the score, or its min-max), ``thr_<e>`` (B,) and ``conf_<e>`` (B,) (float64).
        """
        c = self.config
        relative = c.relative_prediction if relative is None else relative
        mom = c.mom_eval if mom_eval is None else mom_eval
        size = tuple(image.shape[-2:]) if size is None else size
        out = {"av_in": self.pair_map(self.image_features(image, mom), self.audio_features(spec, mom))}
        out["av"] = upsample(out["av_in"], size, mode, align_corners)
        out["s_av"] = (out["av"] + 1.0 / c.tau) / (2.0 / c.tau)
        names = ["av"]
        if self.has_ogl:
            out["obj_in"] = self.object_map(image)
            out["obj"] = upsample(out["obj_in"], size, "bicubic", True)
            out["s_obj"] = out["obj"] / 2.5
            out["s_av_obj"] = c.ogl_alpha * out["s_av"] + (1.0 - c.ogl_alpha) * out["s_obj"]
            names += ["obj", "av_obj"]
        for e in names:
            s = out[f"s_{e}"]
            out[f"conf_{e}"] = confidence(s)
            if relative:
                pred = out[f"pred_{e}"] = minmax(s)
                flat = pred.flatten(1)
                out[f"thr_{e}"] = flat.kthvalue(int(flat.shape[1] * c.pred_size) + 1, dim=1).values
            else:
                out[f"pred_{e}"] = s
                out[f"thr_{e}"] = torch.full((s.shape[0],), c.pred_threshold, dtype=s.dtype, device=s.device)
        return out

    @torch.no_grad()
    def infer(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Evaluation outputs: ``heatmap``: without OGL the AV score ``s_av`` (B, h, w) at the
        feature resolution (min-max normalised with ``relative_prediction``), with OGL ``pred_av_obj``
        at the frame's size; ``audio`` (B, dim) the first head's embedding; ``visual`` (B, dim) the
        normalised spatial mean of the first head's map (momentum features with ``mom_eval``)."""
        c = self.config
        img, aud = self.image_features(image, c.mom_eval), self.audio_features(spec, c.mom_eval)
        if self.has_ogl:
            heat = self.test_maps(image, spec)["pred_av_obj"]
        else:
            heat = (self.pair_map(img, aud) + 1.0 / c.tau) / (2.0 / c.tau)
            heat = minmax(heat) if c.relative_prediction else heat
        return {"heatmap": heat, "audio": aud[0], "visual": F.normalize(img[0].mean(dim=(2, 3)), dim=1)}
