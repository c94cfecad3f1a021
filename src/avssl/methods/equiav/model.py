"""EquiAV pre-training model and loss wiring (docs/methods.md §2.2-2.5, golden A).

Kim et al., "EquiAV: Leveraging Equivariance for Audio-Visual Contrastive Learning",
ICML 2024. The model owns two ViT encoders (audio, visual), one augmentation encoder and one
cross-attention transformation predictor per modality, and intra/inter projection heads.
It never samples or applies augmentations: the batch brings the augmented views, their
parameter vectors ``t_a`` (B, 24) / ``t_v`` (B, 18) and, for the invariant centroid, S sampled
vectors per clip ``t_a_list`` (B, S, 24) / ``t_v_list`` (B, S, 18).

Where no lists are given (retrieval, localisation), :attr:`EquiAV.param_sampler` is called —
the hook through which ``avssl.augment`` supplies parameter vectors. By default it is
:func:`avssl.augment.params.sample_param_lists` for the config's sizes, seeded with
``cfg.sampler_seed`` when called without a generator (so a loaded model embeds deterministically).

Official checkpoints: :mod:`avssl.methods.equiav.convert`; ImageNet MAE initialisation:
:func:`load_mae_init`.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from avssl.augment.params import sample_param_lists
from avssl.methods.equiav.losses import Gather, info_nce, nt_xent
from avssl.models.predictor import AugmentationEncoder, CrossAttentionPredictor, ProjectionHead
from avssl.models.vit import ViTEncoder, init_linear_and_norm, load_mae_into_encoder

logger = logging.getLogger(__name__)

__all__ = [
    "EquiAVConfig", "equiav_vit_b16_config", "equiav_tiny_config", "equiav_vit_b16", "equiav_tiny",
    "EquiAV", "ParamSampler", "load_mae_init", "build_encoders",
]

# (batch_size, num_vectors, generator, device) -> (t_a_list (B,S,d_a), t_v_list (B,S,d_v))
ParamSampler = Callable[[int, int, "torch.Generator | None", torch.device], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EquiAVConfig:
    """Sizes and options of the EquiAV pre-training model (defaults: the paper's ViT-B/16)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    img_size: int = 224
    audio_length: int = 1024  # fbank frames T
    num_mel_bins: int = 128  # F; the original hard-codes 8 frequency patch rows (=128/16)
    patch_size: int = 16
    in_chans: int = 3
    learnable_pos: bool = False
    drop_path: float = 0.0
    aug_dim_a: int = 24
    aug_dim_v: int = 18
    aug_emb_dim: int = 256
    cross_attn_heads: int = 8
    cross_attn_head_dim: int = 64
    proj_hidden_dim: int = 2048
    inter_out_dim: int = 512
    intra_out_dim: int = 512
    num_centroid: int = 16  # S
    centroid: bool = True  # invariant embedding from the centroid (else the token mean)
    tau_inter: float = 0.07
    tau_intra: float = 0.07
    learnable_tau: bool = False  # trainable temperatures initialised to tau_*
    weight_inter: float = 1 / 3
    weight_intra_a: float = 1 / 3
    weight_intra_v: float = 1 / 3
    gather_inter: Gather = "no_grad"
    gather_intra: Gather = "with_grad"
    # augmentation and input options (read by avssl.methods.equiav.pipeline and the default sampler)
    aug_original_bugs: bool = True  # the released audio crop encoding / no-op shift / jitter clamp
    visual_extended: bool = False  # 21-d visual vectors (+ rotation, vertical flip); aug_dim_v=21
    fbank_stats: tuple[float, float] = (-4.346, 4.332)  # fbank (mean, std): AudioSet; VGGSound -4.956/4.486
    sampler_seed: int = 0  # seed of the default param_sampler when called without a generator
    # ImageNet MAE initialisation of both encoders: a local checkpoint file, or "timm:NAME" (online,
    # e.g. timm:vit_base_patch16_224.mae); None = random init. Cleared when a checkpoint is reloaded.
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        want_v = 21 if self.visual_extended else 18
        if self.aug_dim_v != want_v:
            raise ValueError(f"visual_extended={self.visual_extended} needs aug_dim_v={want_v}, "
                             f"got {self.aug_dim_v}")
        if self.aug_dim_a != 24:
            raise ValueError(f"aug_dim_a must be 24 (the audio vector layout), got {self.aug_dim_a}")
        if len(self.fbank_stats) != 2 or not self.fbank_stats[1] > 0:
            raise ValueError(f"fbank_stats must be (mean, std > 0), got {self.fbank_stats}")
        for name in ("img_size", "audio_length", "num_mel_bins"):
            if getattr(self, name) % self.patch_size:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of patch_size")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(f"embed_dim={self.embed_dim} must divide by num_heads and by 4")
        if self.num_centroid < 1:
            raise ValueError("num_centroid must be >= 1")


def equiav_vit_b16_config(**overrides) -> EquiAVConfig:
    """The released recipe: two ViT-B/16, 1024x128 audio, 224 frames, heads 2048->512, S=16."""
    return replace(EquiAVConfig(), **overrides)


def equiav_tiny_config(**overrides) -> EquiAVConfig:
    """The golden-vector size: width 64, depth 2, 4 heads, 64x64 frames, 256x128 audio."""
    tiny = EquiAVConfig(
        embed_dim=64, depth=2, num_heads=4, img_size=64, audio_length=256, aug_emb_dim=32,
        proj_hidden_dim=128, inter_out_dim=32, intra_out_dim=32,
    )
    return replace(tiny, **overrides)


def equiav_vit_b16(**overrides) -> EquiAV:
    """EquiAV with two ViT-B/16 encoders (Kim et al., ICML 2024)."""
    return EquiAV(equiav_vit_b16_config(**overrides))


def equiav_tiny(**overrides) -> EquiAV:
    """A tiny EquiAV for tests and smoke runs (the golden vectors' size)."""
    return EquiAV(equiav_tiny_config(**overrides))


def build_encoders(cfg: EquiAVConfig, aug_norm: bool, drop_path: float, drop: float = 0.0
                   ) -> tuple[ViTEncoder, ViTEncoder]:
    """(audio, visual) encoders for ``cfg``; audio input (B,3,T,F) is transposed to (B,3,F,T)."""
    common = dict(
        patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, drop_path=drop_path, drop=drop,
        aug_norm=aug_norm, learnable_pos=cfg.learnable_pos,
    )
    audio = ViTEncoder((cfg.num_mel_bins, cfg.audio_length), transpose_input=True, **common)
    visual = ViTEncoder((cfg.img_size, cfg.img_size), **common)
    return audio, visual


class EquiAV(nn.Module):
    """EquiAV pre-training model.

    Inputs everywhere: audio ``a`` (B, 3, T, F) (the normalised fbank repeated 3x), frames
    ``v`` (B, 3, H, W); parameter vectors ``t_a`` (B, d_a), ``t_v`` (B, d_v); centroid lists
    ``t_a_list`` (B, S, d_a), ``t_v_list`` (B, S, d_v).
    """

    def __init__(self, cfg: EquiAVConfig | None = None, param_sampler: ParamSampler | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EquiAVConfig()
        if param_sampler is None:  # seeded vectors of the config's sizes: embed/localise work out of the box
            param_sampler = functools.partial(
                sample_param_lists, height=cfg.img_size, width=cfg.img_size, frames=cfg.audio_length,
                bins=cfg.num_mel_bins, extended=cfg.visual_extended, original_bugs=cfg.aug_original_bugs,
                seed=cfg.sampler_seed)
        self.param_sampler = param_sampler
        self.audio_encoder, self.visual_encoder = build_encoders(cfg, True, cfg.drop_path)
        d, e = cfg.embed_dim, cfg.aug_emb_dim
        self.aug_encoder_a = AugmentationEncoder(cfg.aug_dim_a, e)
        self.aug_encoder_v = AugmentationEncoder(cfg.aug_dim_v, e)
        pred = dict(num_heads=cfg.cross_attn_heads, head_dim=cfg.cross_attn_head_dim, mlp_ratio=cfg.mlp_ratio)
        self.predictor_a = CrossAttentionPredictor(d, e, **pred)
        self.predictor_v = CrossAttentionPredictor(d, e, **pred)
        self.head_intra_a = ProjectionHead(d, cfg.proj_hidden_dim, cfg.intra_out_dim)
        self.head_intra_v = ProjectionHead(d, cfg.proj_hidden_dim, cfg.intra_out_dim)
        self.head_inter_a = ProjectionHead(d, cfg.proj_hidden_dim, cfg.inter_out_dim)
        self.head_inter_v = ProjectionHead(d, cfg.proj_hidden_dim, cfg.inter_out_dim)
        for m in (self.aug_encoder_a, self.aug_encoder_v, self.predictor_a, self.predictor_v,
                  self.head_intra_a, self.head_intra_v, self.head_inter_a, self.head_inter_v):
            init_linear_and_norm(m)
        if cfg.learnable_tau:
            self.tau_inter = nn.Parameter(torch.tensor(float(cfg.tau_inter)))
            self.tau_intra = nn.Parameter(torch.tensor(float(cfg.tau_intra)))
        else:
            self.tau_inter, self.tau_intra = cfg.tau_inter, cfg.tau_intra
        self.init_report = load_mae_init(self, cfg.init_checkpoint) if cfg.init_checkpoint else None

    # ----------------------------------------------------------------------------- helpers
    def centroid_params(self, batch_size: int, device: torch.device,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """S = ``cfg.num_centroid`` fresh parameter vectors per clip from :attr:`param_sampler`."""
        if self.param_sampler is None:
            raise RuntimeError(
                "EquiAV needs t_a_list/t_v_list (B, S, d) or a param_sampler "
                "(batch_size, S, generator, device) -> (t_a_list, t_v_list); none was given"
            )
        t_a_list, t_v_list = self.param_sampler(batch_size, self.cfg.num_centroid, generator, device)
        return t_a_list.to(device), t_v_list.to(device)

    def _predict(self, predictor: CrossAttentionPredictor, aug_encoder: AugmentationEncoder,
                 tokens: torch.Tensor, t_list: torch.Tensor | None, t: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Centroid over ``t_list`` (B,S,d) and per-vector prediction for ``t`` (B,d), sharing
        one key/value projection of ``tokens`` (B,N,D). Returns ((B,D) | None, (B,D) | None)."""
        queries = [q for q in (t_list, None if t is None else t[:, None]) if q is not None]
        out = predictor(tokens, aug_encoder(torch.cat(queries, dim=1)))  # (B, S+1, D)
        s = 0 if t_list is None else t_list.shape[1]
        centroid = out[:, :s].mean(dim=1) if t_list is not None else None
        equi = out[:, s] if t is not None else None
        return centroid, equi

    # ----------------------------------------------------------------------------- forward
    def forward(self, a: torch.Tensor, v: torch.Tensor, a_aug: torch.Tensor, v_aug: torch.Tensor,
                t_a: torch.Tensor, t_v: torch.Tensor, t_a_list: torch.Tensor | None = None,
                t_v_list: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The six embeddings, each (B, out_dim): ``z_a_inv, z_v_inv`` (inter heads),
        ``z_a_equi, z_v_equi`` (intra heads on the prediction for t), ``z_a_aug, z_v_aug``
        (intra heads on the mean of the augmented view's tokens)."""
        b = a.shape[0]
        if self.cfg.centroid and (t_a_list is None or t_v_list is None):
            t_a_list, t_v_list = self.centroid_params(b, a.device)
        if not self.cfg.centroid:
            t_a_list = t_v_list = None
        tok_a, tok_a_aug = self.audio_encoder.forward_pair(a, a_aug)
        tok_v, tok_v_aug = self.visual_encoder.forward_pair(v, v_aug)
        cen_a, equi_a = self._predict(self.predictor_a, self.aug_encoder_a, tok_a, t_a_list, t_a)
        cen_v, equi_v = self._predict(self.predictor_v, self.aug_encoder_v, tok_v, t_v_list, t_v)
        if cen_a is None:
            cen_a, cen_v = tok_a.mean(dim=1), tok_v.mean(dim=1)
        intra_a = self.head_intra_a(torch.cat([equi_a, tok_a_aug.mean(dim=1)]))
        intra_v = self.head_intra_v(torch.cat([equi_v, tok_v_aug.mean(dim=1)]))
        return {
            "z_a_inv": self.head_inter_a(cen_a), "z_v_inv": self.head_inter_v(cen_v),
            "z_a_equi": intra_a[:b], "z_v_equi": intra_v[:b],
            "z_a_aug": intra_a[b:], "z_v_aug": intra_v[b:],
        }

    def loss(self, a: torch.Tensor, v: torch.Tensor, a_aug: torch.Tensor, v_aug: torch.Tensor,
             t_a: torch.Tensor, t_v: torch.Tensor, t_a_list: torch.Tensor | None = None,
             t_v_list: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Pre-training loss: ``w_inter L_inter + w_a L_intra_a + w_v L_intra_v``.

        Returns ``{"loss", "loss/inter", "loss/intra_a", "loss/intra_v", "acc/inv",
        "acc/intra_a", "acc/intra_v"}``; accuracies are top-1 percentages (detached).
        """
        z = self(a, v, a_aug, v_aug, t_a, t_v, t_a_list, t_v_list)
        c = self.cfg
        l_inter, acc_inter = info_nce(z["z_a_inv"], z["z_v_inv"], self.tau_inter, c.gather_inter)
        l_a, acc_a = nt_xent(z["z_a_equi"], z["z_a_aug"], self.tau_intra, c.gather_intra)
        l_v, acc_v = nt_xent(z["z_v_equi"], z["z_v_aug"], self.tau_intra, c.gather_intra)
        total = c.weight_inter * l_inter + c.weight_intra_a * l_a + c.weight_intra_v * l_v
        return {
            "loss": total, "loss/inter": l_inter, "loss/intra_a": l_a, "loss/intra_v": l_v,
            "acc/inv": acc_inter, "acc/intra_a": acc_a, "acc/intra_v": acc_v,
        }

    # ----------------------------------------------------------------------------- downstream
    def embed(self, a: torch.Tensor, v: torch.Tensor, t_a_list: torch.Tensor | None = None,
              t_v_list: torch.Tensor | None = None, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieval embeddings (B, inter_out_dim) each, L2-normalised: the inter heads on the
        centroid of S parameter vectors of the clean inputs — always the centroid, whatever
        ``cfg.centroid`` (as the released retrieval code). Without lists, S fresh vectors come
        from :attr:`param_sampler` with ``generator`` (seed it for deterministic results)."""
        out = self.infer(a, v, t_a_list, t_v_list, generator)
        return out["audio"], out["visual"]

    def infer(self, a: torch.Tensor, v: torch.Tensor, t_a_list: torch.Tensor | None = None,
              t_v_list: torch.Tensor | None = None, generator: torch.Generator | None = None
              ) -> dict[str, torch.Tensor]:
        """Evaluation outputs, each encoder run once: ``heatmap`` (B, gh, gw) as :meth:`localise`,
        ``audio`` / ``visual`` (B, P) as :meth:`embed` (the same draws for the same ``generator``)."""
        if t_a_list is None or t_v_list is None:
            t_a_list, t_v_list = self.centroid_params(a.shape[0], a.device, generator)
        tok_a, tok_v = self.audio_encoder(a), self.visual_encoder(v)
        cen_a, _ = self._predict(self.predictor_a, self.aug_encoder_a, tok_a, t_a_list, None)
        cen_v, _ = self._predict(self.predictor_v, self.aug_encoder_v, tok_v, t_v_list, None)
        za = nn.functional.normalize(self.head_inter_a(cen_a), dim=-1)
        zv = nn.functional.normalize(self.head_inter_v(cen_v), dim=-1)
        za_loc = za if self.cfg.centroid else nn.functional.normalize(self.head_inter_a(tok_a.mean(dim=1)), dim=-1)
        return {"heatmap": self._patch_map(za_loc, tok_v), "audio": za, "visual": zv}

    def _patch_map(self, za: torch.Tensor, tok_v: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw): cosine of the audio inter embedding ``za`` (B, P) with every visual patch
        token of ``tok_v`` (B, N, D) through the visual inter head."""
        patches = nn.functional.normalize(self.head_inter_v(tok_v), dim=-1)  # (B, N, P)
        return torch.einsum("bp,bnp->bn", za, patches).view(tok_v.shape[0], *self.visual_encoder.grid)

    def localise(self, a: torch.Tensor, v: torch.Tensor, t_a_list: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Zero-shot sound-source map (B, gh, gw) (14x14 at 224): cosine between the audio inter
        embedding (centroid per ``cfg.centroid``) and every visual patch token passed through
        the visual inter head."""
        tok_a = self.audio_encoder(a)
        if self.cfg.centroid:
            if t_a_list is None:
                t_a_list, _ = self.centroid_params(a.shape[0], a.device, generator)
            feat_a, _ = self._predict(self.predictor_a, self.aug_encoder_a, tok_a, t_a_list, None)
        else:
            feat_a = tok_a.mean(dim=1)
        za = nn.functional.normalize(self.head_inter_a(feat_a), dim=-1)  # (B, P)
        return self._patch_map(za, self.visual_encoder(v))


def load_mae_init(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise every ``audio_encoder`` / ``visual_encoder`` of ``model`` from an ImageNet MAE
    ViT checkpoint file (``{"model": state_dict}`` or a bare state dict): the patch embedding
    (a 1-channel one is repeated to 3), the blocks, and the final norm into the clean-view
    ``norm`` only (``norm_aug`` keeps its identity init). A file never downloads anything;
    ``"timm:NAME"`` asks timm for its pretrained weights (online only).

    Returns:
        ``{encoder_name: [our keys loaded]}`` plus ``"skipped"``: MAE keys not used.
    """
    if str(path).startswith("timm:"):  # online only: timm downloads the weights
        import timm

        name = str(path)[5:]
        return _mae_into_encoders(model, timm.create_model(name, pretrained=True).state_dict(), f"timm {name}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MAE checkpoint not found: {path}")
    from avssl.checkpoint import safe_load

    ckpt = safe_load(path, map_location="cpu", what="MAE checkpoint")  # weights_only, never code
    state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds no state dict (got {type(ckpt).__name__})")
    return _mae_into_encoders(model, state, str(path))


def _mae_into_encoders(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    skipped: set[str] = set(state)
    for name in ("audio_encoder", "visual_encoder"):
        enc = getattr(model, name, None)
        if enc is None:
            continue
        loaded, used = load_mae_into_encoder(enc, state, source=str(path))
        out[name] = [f"{name}.{k}" for k in loaded]
        skipped -= used
    if not out:
        raise ValueError(f"{type(model).__name__} has no audio_encoder/visual_encoder to initialise")
    out["skipped"] = sorted(skipped)
    logger.info("MAE init from %s: %s; skipped %d keys", path,
                {k: len(v) for k, v in out.items() if k != "skipped"}, len(skipped))
    return out
