"""Shared harness: configuration, machine info, device/precision choice, timing, tables, JSON.

Benchmarks never assert timings; they measure inside one process, alternate contenders and
report ratios (this machine's speed drifts, so only same-run comparisons mean anything).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_SESSION = ROOT / "sessions" / "minilm-rotten.toml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Config:
    """What every benchmark gets. Tests shrink it (tiny model, few rows, few steps)."""

    quick: bool = False
    session: Path = DEFAULT_SESSION      # the default session: model, data, seed, batch size, max_length
    model: str | None = None             # override model.source (tests: a tiny model folder)
    data: str | None = None              # override data.source
    max_rows: int | None = None          # override data.max_rows (stratified subset)
    steps: int | None = None             # override the number of steps a benchmark measures
    chunk: int = 10                      # steps per turn when contenders alternate
    results: Path | None = None          # baseline: a finished run's results.json
    workdir: Path | None = None          # scratch space (run folders, caches); a temp dir if None
    smoke: bool = False                  # tests: smallest sizes everywhere, no timing claims
    extra: dict[str, Any] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        base = self.workdir or Path(tempfile.gettempdir()) / f"ftw-bench-{os.getpid()}"
        folder = Path(base) / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def session_with(self, **overrides: Any):
        """The configured session (engine.core.session) with `section.key` overrides, validated."""
        from engine.core.session import load

        session = load(Path(self.session))
        base = {}
        if self.model:
            base["model.source"] = self.model
        if self.data:
            base["data.source"] = self.data
        if self.max_rows is not None:
            base["data.max_rows"] = self.max_rows
        base.update(overrides)
        for key, value in base.items():
            session = session.with_value(key.replace("__", "."), value)
        return session


# --------------------------------------------------------------------------- device

def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def autocast(precision: str):
    """The autocast context ftw's precision means (bf16 on CPUs with AMX or AVX-512 BF16, and CUDA), or nothing for fp32."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device(), dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type=device(), dtype=torch.float16)
    return contextlib.nullcontext()


def plain_script_malloc() -> None:
    """glibc's allocator as a plain script runs with it after warm-up: blocks over 32 MiB (its
    dynamic mmap threshold's ceiling) mmapped afresh, freed memory over 64 MiB trimmed. Undoes
    engine.hardware.keep_freed_memory_for_reuse for the contenders that are not the engine."""
    from engine.hardware import set_malloc_thresholds

    set_malloc_thresholds(mmap=32 << 20, trim=64 << 20)


def adamw(params, lr: float, weight_decay: float = 0.0):
    """AdamW as ftw picks it: fused on CUDA, torch's default (foreach) on CPU."""
    import torch

    params = [p for p in params if p.requires_grad]
    if device() == "cuda":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# --------------------------------------------------------------------------- machine

def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = Path("/proc/cpuinfo").read_text()
        features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    except OSError:
        features = []
    info = {
        "cpu": cpu, "cpu_features": features, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "device": device(), "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- timing

class Timer:
    """Accumulates wall time of `with timer:` blocks (synchronising CUDA at both ends)."""

    def __init__(self):
        self.total = 0.0
        self.samples: list[float] = []

    def __enter__(self):
        sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync()
        elapsed = time.perf_counter() - self._start
        self.total += elapsed
        self.samples.append(elapsed)
        return False


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def alternate(contenders: dict[str, Callable[[int], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each contender's fn(round) in turn, `rounds` times (after `warmup` untimed rounds);
    the contenders interleave, so drift in machine speed hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(warmup + rounds):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn(r)
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


class Baton:
    """Round-robin turns between contender threads: exactly one runs at a time.

    Each contender thread calls ready() once it is set up (the next one is built only then, so
    set-up never overlaps a measured step), then take(i) / give(i) around each chunk of steps,
    and done(i) at the end. Time while holding the baton is that contender's time.
    """

    def __init__(self, names: list[str], on_turn: dict[int, Callable[[], Any]] | None = None):
        """`on_turn[i]` runs in contender i's thread each time it takes the baton (process-wide
        settings that belong to one contender, such as the engine's allocator setting)."""
        self.names = list(names)
        self.on_turn = on_turn or {}
        self.active = list(range(len(names)))
        self.turn: int | None = None           # None until open()
        self.cond = threading.Condition()
        self.ready_events = [threading.Event() for _ in names]
        self.held = [0.0] * len(names)
        self.turns = [0] * len(names)
        self._since = [0.0] * len(names)

    def ready(self, i: int) -> None:
        self.ready_events[i].set()

    def wait_ready(self, i: int, timeout: float | None = None) -> bool:
        return self.ready_events[i].wait(timeout)

    def open(self) -> None:
        with self.cond:
            self.turn = self.active[0] if self.active else None
            self.cond.notify_all()

    def take(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)
        if i in self.on_turn:
            self.on_turn[i]()
        sync()
        self._since[i] = time.perf_counter()

    def give(self, i: int, timed: bool = True) -> None:
        sync()
        if timed:
            self.held[i] += time.perf_counter() - self._since[i]
            self.turns[i] += 1
        with self.cond:
            self._advance(i)

    def done(self, i: int) -> None:
        with self.cond:
            if i in self.active:
                position = self.active.index(i)
                self.active.remove(i)
                if self.turn == i:
                    self.turn = self.active[position % len(self.active)] if self.active else None
                self.cond.notify_all()
            self.ready_events[i].set()

    def _advance(self, i: int) -> None:
        if len(self.active) > 1:
            self.turn = self.active[(self.active.index(i) + 1) % len(self.active)]
        self.cond.notify_all()


# --------------------------------------------------------------------------- output

def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}g}"
    return str(value)


def table(title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> str:
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    for row in cells:
        out.append("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))))
    out.append(line)
    if note:
        out.append(note)
    return "\n".join(out)


def write_result(name: str, payload: dict[str, Any], folder: Path | None = None) -> Path:
    folder = Path(folder or RESULTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_jsonable, allow_nan=True))
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return a / b


def train_in_process(session, folder: Path) -> tuple[Any, Any, float | None, float]:
    """Train as a worker does, in this process, with its events in `folder`: (setup, outcome, the
    last progress event's samples/s, training seconds)."""
    from engine import setup as engine_setup
    from engine import train as engine_train
    from engine.core import protocol
    from engine.core.runs import RunPaths

    run = RunPaths(folder)
    run.root.mkdir(parents=True, exist_ok=True)
    writer = protocol.EventWriter(run.events)
    control = engine_train.Control(run.commands, writer.emit)
    speeds: list[float] = []

    def emit(type_, **data):
        if type_ == protocol.PROGRESS and data.get("samples_per_s"):
            speeds.append(data["samples_per_s"])
        writer.emit(type_, **data)

    try:
        setup = engine_setup.build(session)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            outcome = engine_train.train(setup, run, emit, control, None)
        train_s = time.perf_counter() - started
    finally:
        writer.close()
    return setup, outcome, (speeds[-1] if speeds else None), round(train_s, 1)
