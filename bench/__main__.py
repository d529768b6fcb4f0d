"""python -m bench [NAME ...] [--quick]: run benchmarks, print tables, write bench/results/<NAME>.json."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
import traceback
from pathlib import Path

from bench import REGISTRY, common, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all): "
                        + ", ".join(REGISTRY))
    parser.add_argument("--quick", action="store_true", help="small sizes: minutes, not tens of minutes")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--session", type=Path, default=common.DEFAULT_SESSION,
                        help="session whose model/data/settings to use (default: sessions/minilm-rotten.toml)")
    parser.add_argument("--model", help="override model.source (a builtin, or a local model folder)")
    parser.add_argument("--steps", type=int, help="override the steps a training benchmark measures")
    parser.add_argument("--results", type=Path, help="baseline: results.json of a finished ftw run")
    parser.add_argument("--max-rows", type=int, help="use a stratified subset of this many rows")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    parser.add_argument("--extra", action="append", default=[], metavar="KEY=A,B",
                        help="benchmark-specific lists, e.g. accuracy: shapes=3way settings=default,plain seeds=0,1")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, line) in REGISTRY.items():
            print(f"{name:12} {line}")
        return 0
    names = args.names or list(REGISTRY)
    for name in names:
        if name not in REGISTRY:
            close = difflib.get_close_matches(name, REGISTRY, n=1)
            parser.error(f"unknown benchmark {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + "; known: " + ", ".join(REGISTRY))
    _quiet()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = common.Config(quick=args.quick, session=args.session, steps=args.steps, results=args.results,
                        max_rows=args.max_rows, model=args.model, extra=_extra(parser, args.extra))
    machine = common.machine_info()
    print(f"machine: {machine['cpu']} | {machine['cores']} cores, torch {machine['torch']} "
          f"({machine['torch_threads']} threads) | device {machine['device']} | {machine['date']}")
    done: dict[str, dict] = {}
    failed = []
    for name in names:
        module = load(name)
        started = time.perf_counter()
        print(f"\n== {name} {'(quick)' if args.quick else ''} ...", flush=True)
        try:
            result = module.run(cfg, prior=done)
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
            continue
        elapsed = time.perf_counter() - started
        done[name] = result
        print(module.render(result))
        path = common.write_result(name, {"benchmark": name, "quick": args.quick, "machine": machine,
                                          "wall_s": round(elapsed, 1), "session": str(args.session),
                                          "result": result}, args.out)
        print(f"({elapsed:.0f} s; {path})", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _extra(parser, items: list[str]) -> dict[str, list]:
    extra = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            parser.error(f"--extra {item!r}: write KEY=A,B (e.g. seeds=0,1)")
        extra[key] = [int(v) if v.lstrip("-").isdigit() else v for v in values.split(",")]
    return extra


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    logging.getLogger("accelerate").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
