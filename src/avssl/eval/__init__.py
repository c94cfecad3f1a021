"""avssl.eval."""
