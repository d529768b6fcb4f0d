"""ftw engine: everything that knows torch, transformers, datasets and scikit-learn.

Importing this package is cheap: heavy libraries are imported inside the functions
that need them, so the TUI can use the light modules (session, protocol, runs).
"""
