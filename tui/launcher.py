"""The `ftw` console script: with a sub-command it is the engine's CLI, without one the workbench.

This module stays tiny so `ftw` starts fast; the CLI imports heavy libraries only inside the
commands that need them.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    while args[:1] == ["--sessions-dir"] and len(args) > 1 or args[:1] and args[0].startswith("--sessions-dir="):
        # A leading global option applies to the workbench and to every sub-command alike.
        value = args[0].split("=", 1)[1] if "=" in args[0] else args[1]
        os.environ["FTW_SESSIONS_DIR"] = value
        args = args[1:] if "=" in args[0] else args[2:]
    if args[:1] == ["open"]:  # `ftw open NAME`: the workbench opened on one session
        args = args[1:]
    elif args and not args[0].startswith("-") or any(a in ("-h", "--help", "--version") for a in args[:1]):
        from engine import cli

        # `ftw NAME` alone, for an existing session NAME, opens it as `ftw open NAME` does
        if not (len(args) == 1 and cli.names_a_session_not_a_command(args[0])):
            return cli.main(args)
    from tui.app import run_app

    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
