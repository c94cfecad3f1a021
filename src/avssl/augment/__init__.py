"""avssl.augment."""
