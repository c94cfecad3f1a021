"""SSL-TIE: sound localisation with transformation invariance and equivariance (docs/methods.md §1).

Liu, Ju, Xie, Zhang, ACM MM 2022 (arXiv 2206.12772). The module holds the two ResNet-18
encoders and computes its own loss (no training loop here):

    A, logits   = model(frame)              # 14x14 map, LVS tri-map logits
    A_T, logits_T = model(T(frame))         # 7x7 when s = 0.5
    L = 0.5 * (CE(logits) + CE(logits_T)) + lambda * MSE(A_T, T(A))

``T`` is :mod:`avssl.augment.geometric`. :mod:`avssl.methods.ssltie.convert` maps an official
AVENet checkpoint (``imgnet.*``, ``audnet.*``) onto this module.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.augment import geometric
from avssl.methods.ssltie import losses
from avssl.models.resnet import INIT_MODES, audio_resnet18, load_imagenet_visual, visual_resnet18

logger = logging.getLogger(__name__)


CENTER_MODES = ("none", "audio", "both")  # SSLTIEConfig.center_embeddings


@dataclass(frozen=True)
class SSLTIEConfig:
    """SSL-TIE options; the defaults are the released training scripts' (docs/methods.md §1.2-1.4).

    width: base channels of both ResNet-18s (64 paper, 32/16 for CPU demos).
    image_size / heatmap_size: frame side and the map side it gives (stride 16).
    tau, eps_p, eps_n: LVS mask temperature and thresholds.
    tri_map: negative region from eps_n (off: N = 1 - P). hard_negatives: append s_hn.
    logit_temperature: the hard-coded 0.07.
    equivariance: add the transformed-frame pass and the MSE term (off: L = L_cl).
    lambda_equi: weight of the MSE term. max_angle, scales, flip_prob: the transform draw.
    shrink_once: cleaner transform at s = 0.5 (content not shrunk twice); off = authors'.
    invariance: the training frames/spectrograms get the MoCo-v2 / SpecAugment augmentation
        (read by the data pipeline; there is no separate invariance loss).
    share_audio_pass: run the audio encoder once per step instead of once per visual pass; the
        outputs and gradients are identical, and the audio BatchNorm running statistics are
        updated with momentum ``1 - (1 - m)^2`` so they end up as after two updates.
    init: "ssltie" (BN weight N(1, 0.02)) or "torchvision" (BN weight 1).
    imagenet_init: optional path of a local torchvision resnet18 state dict loaded into the
        visual encoder after init (the paper trains from scratch: None).
    init_checkpoint: optional path of an avssl SSL-TIE checkpoint whose weights (both encoders)
        replace the initialisation: a warm start, e.g. from a model trained on the synthetic
        benchmark (a curriculum; not in the released recipe). Its width must match.
    audio_roll: an avssl option, not in the released recipe (read by the data pipeline): each
        training waveform is rolled circularly by a uniform random shift every step, before the
        spectrogram, so a clip is never heard from the same start twice (it takes away the
        recording's position as a cue a small training set can be memorised by).
    center_embeddings: an avssl option, not in the released recipe: "audio" passes the audio
        encoder's output, "both" both encoders' outputs, through an affine-free BatchNorm (batch
        statistics in training, running ones in evaluation) before the L2 normalisation, so the
        embeddings are centred; "none" (default) is the released model. The released encoders end
        in ReLU (+ max pooling for audio): every embedding lies in the positive orthant and an untrained model's
        audio embeddings of different clips have cosine ~0.97-0.998, so the maps start out (and on
        small sets stay) the same whatever is heard.
    exclude_own_pair: drop the own pair from the easy negatives (logit -inf) instead of the
        authors' ``1 - 100 I`` factor, which leaves it there at -99x its value (an avssl option;
        needed with ``center_embeddings``, where ``s_pos`` can be negative and the factor then
        makes the own pair the largest logit).
    audmix: the Audmix variant (docs/methods.md §1.4, :mod:`avssl.methods.ssltie.audmix`; read by the data
        pipeline): after each epoch each training clip gets its nearest audio among a random
        queue of ``audmix_queue`` clips; next epoch, with probability
        ``audmix_p0 + audmix_p_step * k`` its waveform becomes ``(1 - a) x + a x_nn``,
        ``a = audmix_alpha_step * k``, k = epochs of mixing so far.
    """

    width: int = 64
    image_size: int = 224
    heatmap_size: int = 14
    tau: float = 0.03
    eps_p: float = 0.65
    eps_n: float = 0.4
    tri_map: bool = True
    hard_negatives: bool = True
    logit_temperature: float = 0.07
    equivariance: bool = True
    lambda_equi: float = 1.0
    max_angle: int = 30
    scales: tuple[float, ...] = (1.0, 0.5)
    flip_prob: float = 0.5
    shrink_once: bool = False
    invariance: bool = True
    share_audio_pass: bool = True
    init: str = "ssltie"
    imagenet_init: str | None = None
    init_checkpoint: str | None = None
    audio_roll: bool = False
    center_embeddings: str = "none"
    exclude_own_pair: bool = False
    audmix: bool = False
    audmix_queue: int = 4000
    audmix_p0: float = 0.1
    audmix_p_step: float = 0.01
    audmix_alpha_step: float = 0.01

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if self.image_size // 16 != self.heatmap_size:
            raise ValueError(f"heatmap_size {self.heatmap_size} != image_size/16 = {self.image_size // 16}")
        if self.tau <= 0 or self.logit_temperature <= 0:
            raise ValueError("tau and logit_temperature must be positive")
        if self.max_angle < 0 or not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"bad transform options: max_angle={self.max_angle}, scales={self.scales}")
        if self.equivariance:
            for s in self.scales:
                side = int(s * self.image_size)
                if side % 16 or side // 16 != int(s * self.heatmap_size):
                    raise ValueError(
                        f"scale {s} turns the {self.image_size}px frame into {side}px, whose map does not "
                        f"match the {int(s * self.heatmap_size)}-cell transformed map: use an image_size "
                        f"for which int(scale * image_size) is a multiple of 16 (e.g. a multiple of 32)"
                    )
        if self.audmix_queue < 2 or not 0 <= self.audmix_p0 <= 1 or self.audmix_p_step < 0 \
                or not 0 <= self.audmix_alpha_step <= 1:
            raise ValueError(f"bad Audmix options: queue={self.audmix_queue}, p0={self.audmix_p0}, "
                             f"p_step={self.audmix_p_step}, alpha_step={self.audmix_alpha_step}")
        if self.center_embeddings not in CENTER_MODES:
            raise ValueError(f"center_embeddings must be one of {CENTER_MODES}, got {self.center_embeddings!r}")
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}")


@contextlib.contextmanager
def _doubled_bn_momentum(module: nn.Module) -> Iterator[None]:
    """Temporarily set every BN momentum m to 1 - (1 - m)^2 (one update == two identical ones)."""
    saved = [(m, m.momentum) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None]
    for m, mom in saved:
        m.momentum = 1.0 - (1.0 - mom) ** 2
    try:
        yield
    finally:
        for m, mom in saved:
            m.momentum = mom


class SSLTIE(nn.Module):
    """SSL-TIE model + loss. Frames (B, 3, H, W) ImageNet-normalised; spectrograms (B, 1, F, T) in dB."""

    def __init__(self, config: SSLTIEConfig | None = None) -> None:
        super().__init__()
        self.config = config or SSLTIEConfig()
        self.visual = visual_resnet18(self.config.width, self.config.init)
        self.audio = audio_resnet18(self.config.width, self.config.init)
        channels = 8 * self.config.width
        if self.config.center_embeddings == "both":
            self.visual_center = nn.BatchNorm2d(channels, affine=False)
        if self.config.center_embeddings in ("audio", "both"):
            self.audio_center = nn.BatchNorm1d(channels, affine=False)
        if self.config.imagenet_init is not None:
            load_imagenet_visual(self.visual, self.config.imagenet_init)
        if self.config.init_checkpoint is not None:
            self._load_init(self.config.init_checkpoint)

    def _load_init(self, path: str) -> None:
        from avssl.checkpoint import CheckpointError, load_checkpoint, strip_prefixes

        state = strip_prefixes(load_checkpoint(path)["model"])
        try:
            self.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"ssltie.init_checkpoint {path}: does not fit this model (another width?): "
                                  f"{first}") from e
        logger.info("ssltie: initialised from %s", path)

    # -- encoders and maps ------------------------------------------------------------------
    def encode_image(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) -> L2-normalised (along channels) feature map (B, 8w, H/16, W/16)."""
        x = self.visual(image)
        if self.config.center_embeddings == "both":
            x = self.visual_center(x)
        return F.normalize(x, dim=1)

    def encode_audio(self, spec: Tensor) -> Tensor:
        """(B, 1, F, T) -> L2-normalised max-pooled embedding (B, 8w)."""
        x = self.audio(spec)
        if self.config.center_embeddings != "none":
            x = self.audio_center(x)
        return F.normalize(x, dim=1)

    @staticmethod
    def maps(img_feat: Tensor, aud_feat: Tensor) -> tuple[Tensor, Tensor]:
        """Cosine maps: ``A`` (B, 1, h, w) paired, ``A0`` (B, B, h, w) with ``A0[i, j]`` = frame i, audio j."""
        A0 = torch.einsum("bchw,kc->bkhw", img_feat, aud_feat)
        A = torch.diagonal(A0, dim1=0, dim2=1).permute(2, 0, 1).unsqueeze(1)
        return A, A0

    def forward_maps(self, image: Tensor, spec: Tensor, aud_feat: Tensor | None = None) -> dict[str, Tensor]:
        """Maps and features: ``A`` (B,1,h,w), ``A0`` (B,B,h,w), ``img_feat`` (B,C,h,w), ``aud_feat`` (B,C).

        ``aud_feat`` may be passed to reuse an audio embedding (then ``spec`` is not encoded).
        """
        img_feat = self.encode_image(image)
        if aud_feat is None:
            aud_feat = self.encode_audio(spec)
        A, A0 = self.maps(img_feat, aud_feat)
        return {"A": A, "A0": A0, "img_feat": img_feat, "aud_feat": aud_feat}

    def localisation_logits(self, A: Tensor, A0: Tensor) -> losses.LVSLogits:
        """LVS logits (B, B+2) with the configured switches; see :func:`avssl.methods.ssltie.losses.lvs_trimap_logits`."""
        c = self.config
        return losses.lvs_trimap_logits(A, A0, tau=c.tau, eps_p=c.eps_p, eps_n=c.eps_n, tri_map=c.tri_map,
                                        hard_negatives=c.hard_negatives, temperature=c.logit_temperature,
                                        exclude_own_pair=c.exclude_own_pair)

    # -- training objective -----------------------------------------------------------------
    def step_outputs(self, image: Tensor, spec: Tensor, generator: torch.Generator | None = None,
                     params: geometric.EquivarianceParams | None = None) -> dict:
        """Everything one step computes: maps, logits, the transform and the loss terms.

        Keys: ``A``, ``logits``, ``loss/cl`` and, with equivariance, ``params``, ``image_t``,
        ``A_t`` (map of T(frame)), ``t_A`` (T(A)), ``logits_t``, ``loss/cl_ts``, ``loss/equi``.
        ``params`` overrides the draw from ``generator``.
        """
        c = self.config
        out: dict = {}
        share = c.equivariance and c.share_audio_pass
        if share and self.training:
            with _doubled_bn_momentum(self):  # only the audio path runs inside (its centring too)
                aud_feat = self.encode_audio(spec)
        else:
            aud_feat = self.encode_audio(spec)
        maps = self.forward_maps(image, spec, aud_feat=aud_feat)
        out["A"], out["logits"] = maps["A"], self.localisation_logits(maps["A"], maps["A0"]).logits
        out["loss/cl"] = losses.lvs_loss(out["logits"])
        if not c.equivariance:
            return out
        if params is None:
            params = geometric.sample_params(image.shape[0], generator, c.max_angle, c.scales, c.flip_prob)
        image_t = geometric.apply(image, params, c.image_size, c.shrink_once)
        maps_t = self.forward_maps(image_t, spec, aud_feat=aud_feat if share else None)
        out.update(params=params, image_t=image_t, A_t=maps_t["A"])
        out["logits_t"] = self.localisation_logits(maps_t["A"], maps_t["A0"]).logits
        out["t_A"] = geometric.apply(out["A"], params, c.image_size, c.shrink_once)
        out["loss/cl_ts"] = losses.lvs_loss(out["logits_t"])
        out["loss/equi"] = losses.equivariance_consistency(out["A_t"], out["t_A"])
        return out

    def loss(self, image: Tensor, spec: Tensor, generator: torch.Generator | None = None,
             params: geometric.EquivarianceParams | None = None) -> dict[str, Tensor]:
        """Scalar losses: ``loss`` = 0.5 (``loss/cl`` + ``loss/cl_ts``) + lambda ``loss/equi`` (``loss/cl`` alone without equivariance)."""
        return self.loss_terms(self.step_outputs(image, spec, generator, params))

    def loss_terms(self, out: Mapping) -> dict[str, Tensor]:
        """The scalar loss dict from :meth:`step_outputs`' result (see :meth:`loss`)."""
        if not self.config.equivariance:
            return {"loss": out["loss/cl"], "loss/cl": out["loss/cl"]}
        total = 0.5 * (out["loss/cl"] + out["loss/cl_ts"]) + self.config.lambda_equi * out["loss/equi"]
        return {"loss": total, **{k: out[k] for k in ("loss/cl", "loss/cl_ts", "loss/equi")}}

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training entry point: ``batch["image"]`` (B,3,H,W), ``batch["spec"]`` (B,1,F,T) -> loss dict."""
        return self.loss(batch["image"], batch["spec"], generator)

    @torch.no_grad()
    def infer(self, image: Tensor, spec: Tensor) -> dict[str, Tensor]:
        """Evaluation outputs (no grad), each encoder run once: ``heatmap`` (B, h, w) the cosine of
        every location with the paired audio, ``audio`` (B, C) the normalised max-pooled audio
        embedding, ``visual`` (B, C) the normalised spatial mean of the normalised visual map."""
        img_feat, aud_feat = self.encode_image(image), self.encode_audio(spec)
        return {"heatmap": torch.einsum("bchw,bc->bhw", img_feat, aud_feat), "audio": aud_feat,
                "visual": F.normalize(img_feat.mean(dim=(2, 3)), dim=1)}

    @torch.no_grad()
    def localise(self, image: Tensor, spec: Tensor) -> Tensor:
        """Localisation map (B, h, w): cosine of each location with the paired audio (no grad)."""
        return self.infer(image, spec)["heatmap"]
