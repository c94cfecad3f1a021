"""avssl.engine."""
