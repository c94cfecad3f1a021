"""Convert the authors' released checkpoints into avssl checkpoints.

  --from ssltie-official   SSL-TIE ``AVENet`` state dict (plain, under "model"/"state_dict",
                          optionally with DataParallel "module." prefixes); the ResNet width is
                          read from the weights.
  --from equiav-official  EquiAV pre-training state dict (``__M__.``/``module.`` prefixes
                          accepted); the sizes are read from the weights (widths, depth,
                          patch grids, head widths); what they cannot tell (attention heads,
                          mel bins, loss options) comes from --preset (vit_b16, the released
                          model, or tiny); key=value overrides of the EquiAV config win.

Every official key is accounted for: loaded, dropped with a reason (unused by the original
forward), unexpected, or (ours) missing. The report is printed as JSON; unexpected or missing
keys make the command fail unless --allow-mismatch is given. OUT is an avssl checkpoint that
`avssl eval` / `avssl localize` and `avssl.registry.load_method` read.

Examples:
    avssl convert --from ssltie-official ssltie_vggsound.pth.tar ssltie_vgg.pt
    avssl convert --from equiav-official EquiAV_pretrained.pth equiav.pt --preset vit_b16
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "convert an official SSL-TIE / EquiAV checkpoint into an avssl checkpoint"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, choices=("ssltie-official", "equiav-official"),
                        help="format of IN")
    parser.add_argument("input", metavar="IN", help="the official checkpoint file")
    parser.add_argument("output", metavar="OUT", help="the avssl checkpoint to write")
    parser.add_argument("--preset", choices=("vit_b16", "tiny"), default="vit_b16",
                        help="EquiAV sizes (default vit_b16, the released model)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the method")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="write OUT even when keys are unexpected or missing (they are still reported)")


def _load(path: Path):
    from avssl.checkpoint import safe_load

    # weights_only with argparse.Namespace allowed (released training files pickle their options)
    return safe_load(path, map_location="cpu", what="official checkpoint")


def convert(source: str, input_path: str | Path, output_path: str | Path, preset: str = "vit_b16",
            overrides: list[str] | tuple[str, ...] = (), allow_mismatch: bool = False) -> dict:
    """Convert ``input_path`` into an avssl checkpoint at ``output_path``; returns the report dict."""
    from avssl.checkpoint import CheckpointError, save_checkpoint, unwrap_state_dict
    from avssl.config import from_dict, merge, parse_dotlist, to_dict
    from avssl.methods import equiav, ssltie

    raw = _load(Path(input_path))
    extra = parse_dotlist(overrides)
    if source == "ssltie-official":
        sd, rep = ssltie.convert_official_state_dict(raw)
        width = int(sd["visual.conv1.weight"].shape[0]) if "visual.conv1.weight" in sd else 64
        cfg = from_dict(ssltie.SSLTIEConfig, merge({"width": width}, extra))
        model = ssltie.SSLTIE(cfg)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        report = {"loaded": len(rep.loaded), "dropped": rep.dropped, "unexpected": rep.unexpected + list(unexpected),
                  "missing": sorted(set(rep.missing) | set(missing))}
        method = "ssltie"
    else:
        base = to_dict(equiav.equiav_vit_b16_config() if preset == "vit_b16" else equiav.equiav_tiny_config())
        base = merge(base, extra)
        sd = unwrap_state_dict(raw, ("model", "state_dict"))
        inferred = equiav.official_pretrain_sizes(sd, int(base["num_mel_bins"]))
        # sizes from the weights; what they cannot tell from the preset; overrides win over both
        sizes = merge(merge(base, inferred), extra)
        if int(sizes["embed_dim"]) % int(sizes["num_heads"]):
            raise CheckpointError(
                f"{input_path}: the weights are {sizes['embed_dim']} wide, which {sizes['num_heads']} attention "
                f"heads (--preset {preset}) do not divide; the weights cannot tell the head count: "
                "pass num_heads=N (or --preset tiny)")
        cfg = from_dict(equiav.EquiAVConfig, sizes)
        model = equiav.EquiAV(cfg)
        try:
            rep = equiav.load_official_pretrain(model, sd, strict=False)
        except RuntimeError as e:  # shapes the sizes above could not reconcile
            first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise CheckpointError(f"{input_path}: weights do not fit an EquiAV of the inferred sizes "
                                  f"({first}); set the sizes as key=value overrides") from None
        report = {"loaded": len(rep.loaded), "dropped": rep.dropped, "unexpected": rep.unexpected,
                  "missing": rep.missing, "notes": rep.notes}
        method = "equiav"
    report["ok"] = not report["unexpected"] and not report["missing"]
    if not report["ok"] and not allow_mismatch:
        raise CheckpointError(
            f"{input_path}: {len(report['unexpected'])} unexpected keys {report['unexpected'][:5]}, "
            f"{len(report['missing'])} missing keys {report['missing'][:5]} (use --allow-mismatch to write anyway)"
        )
    save_checkpoint(output_path, model=model.state_dict(), config={"method": method, method: to_dict(cfg)},
                    step=0, epoch=0, extra={"converted_from": str(input_path), "source_format": source})
    return report


def run(args: argparse.Namespace) -> int:
    from avssl.checkpoint import CheckpointError
    from avssl.config import ConfigError

    try:
        report = convert(args.source, args.input, args.output, args.preset, args.overrides, args.allow_mismatch)
    except (CheckpointError, ConfigError, ValueError, KeyError) as e:
        log.error("%s", e)
        return 2
    print(json.dumps({"output": args.output, **report}, indent=2, default=str))
    return 0
