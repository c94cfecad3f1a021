"""avssl.commands."""
