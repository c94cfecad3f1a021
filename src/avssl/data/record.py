"""One clip of a data set (:class:`Record`) and the error of a clip list that points at nothing
usable (:class:`ManifestError`): what manifests (:mod:`avssl.data.manifest`) and shard indexes
(:mod:`avssl.data.shard_access`) both produce."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ManifestError", "Record"]


class ManifestError(ValueError):
    """A manifest that cannot be read, or an entry that points at nothing usable."""


@dataclass
class Record:
    """One clip. Paths are absolute once read through :func:`read_manifest`."""

    id: str
    video: str | None = None
    audio: str | None = None
    frames: list[str] | None = None
    labels: list[str] = field(default_factory=list)
    split: str | None = None
    extra: dict = field(default_factory=dict)

    def media_paths(self) -> list[str]:
        """Every file this record needs."""
        paths = [self.video] if self.video else []
        if self.audio:
            paths.append(self.audio)
        paths.extend(self.frames or [])
        return paths

    def to_json(self, base: Path | None = None) -> dict:
        """A JSON-able dict with paths relative to ``base`` where they lie under it."""
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v not in (None, [])}
        if base is not None:
            for key in ("video", "audio"):
                if key in d:
                    d[key] = _relative(d[key], base)
            if "frames" in d:
                d["frames"] = [_relative(p, base) for p in d["frames"]]
        d.update(self.extra)
        return d


def _relative(path: str, base: Path) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)
