"""ftw's Textual workbench. Never imports torch, transformers, datasets or sklearn: heavy work
runs in the engine's worker process or in `ftw … --json` subprocesses."""
