"""Cross-bank signals without pooling rows: secure account sketches and private alert matching."""
