"""avssl.data."""
