"""avssl: self-supervised audio-visual learning (SSL-TIE, EquiAV)."""

__version__ = "0.1.0"
