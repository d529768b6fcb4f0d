"""The light core: the session format, the event protocol, run folders and checkpoints on disk.

Stdlib (and tomlkit) only: the TUI and `ftw status` import it, so it must never import torch,
transformers, datasets, sklearn or textual (import-linter contracts in pyproject.toml)."""
