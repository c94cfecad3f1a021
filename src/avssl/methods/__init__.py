"""avssl.methods."""
