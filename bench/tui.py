"""The TUI's budgets (performance issue, item 7): first paint, key latency under load, memory.

  first paint   a fresh `python` process builds FtwApp on a folder of a few sessions and runs it
                headless; times from spawn to the first frame and to the frame showing the list
                (median of several rounds), and the import time of `tui.app` alone (target < 0.5 s)
  key latency   a session open on its Run tab while a thread appends realistic events to its
                events.jsonl at 200/s; keys 6/5 switch tabs (the heaviest common key: a whole new
                layout), down/up move the evaluation table's cursor (the common key), each timed from
                the key reaching the app until the first frame drawn after its effect is done
                (target p50/p99 < 50 ms); the same presses with no stream as the reference
  memory        1,000,000 generated events folded through engine.core.protocol.reduce, and a large
                log replayed once by the Run tab's watcher (tui.run_watch.RunFollower), each in a
                fresh process: RSS growth, peak, and the bounded state (curve points, evaluations)

No torch here: the TUI never imports it, and neither do these measurements' processes (the
harness in bench/__main__ does, for machine_info, before this module runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

from bench import common

NAME = "tui"
SESSION = "bench-run"
PAINT_TARGET_S = 0.5
KEY_TARGET_S = 0.05
RATE = 200.0


def sizes(cfg: common.Config) -> dict[str, int]:
    if cfg.smoke:
        base = {"rounds": 1, "presses": 4, "events": 10_000, "watch_events": 10_000}
    elif cfg.quick:
        base = {"rounds": 3, "presses": 40, "events": 200_000, "watch_events": 200_000}
    else:
        base = {"rounds": 7, "presses": 200, "events": 1_000_000, "watch_events": 1_000_000}
    base.update({k: v for k, v in cfg.extra.items() if k in base})
    return base


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    size = sizes(cfg)
    folder = cfg.scratch(NAME)
    sessions_dir = make_sessions(folder / f"sessions-{time.time_ns()}")
    return {
        "sizes": size,
        "first_paint": first_paint(sessions_dir, size["rounds"]),
        "key_latency": key_latency(sessions_dir, size["presses"], RATE, warm_s=0.3 if cfg.smoke else 1.0),
        "memory": memory(folder, size["events"], size["watch_events"]),
    }


# --------------------------------------------------------------------------- generated runs

def make_sessions(folder: Path, count: int = 5) -> Path:
    """A sessions folder: `count` sessions, one with a finished run and SESSION with a run going."""
    from engine.core import protocol, session as session_format

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count - 1):
        session_format.create(f"demo-{i}", folder)
    finished = session_format.load(folder / "demo-0.toml")
    writer = protocol.EventWriter(finished.run_dir / "events.jsonl")
    for kind, data in synthetic_events(2_000, finished=True):
        writer.emit(kind, **data)
    writer.close()
    running = session_format.create(SESSION, folder)
    writer = protocol.EventWriter(running.run_dir / "events.jsonl")
    for kind, data in synthetic_events(5_000):  # ~2,400 steps: ten evaluation rows to move through
        writer.emit(kind, **data)
    writer.close()
    return folder


def _eval(step: int) -> dict[str, Any]:
    acc = round(0.7 + 0.2 * (1 - 1 / (1 + step / 5000)), 4)
    f1 = round(acc - 0.01, 4)
    return {"split": "validation", "step": step, "epoch": step / 250, "loss": round(0.6 - acc / 3, 4),
            "accuracy": acc, "macro_f1": f1, "weighted_f1": f1, "precision": acc, "recall": acc,
            "labels": ["fresh", "rotten"],
            "per_class": {"fresh": {"precision": acc, "recall": acc, "f1": f1, "support": 245},
                          "rotten": {"precision": acc, "recall": acc, "f1": f1, "support": 241}},
            "confusion": [[int(245 * acc), 245 - int(245 * acc)], [241 - int(241 * acc), int(241 * acc)]]}


def synthetic_events(count: int, start_step: int = 0, header: bool = True,
                     finished: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, data) pairs like a worker writes: per step a train_log and a progress event, an
    evaluation and a checkpoint every 250 steps, a heartbeat every 25 steps; `count` in all."""
    emitted = 0
    if header:
        for item in (("run_started", {"run_id": "bench", "resume": False, "from_step": 0, "pid": 0,
                                      "threads": 2, "device": "cpu", "precision": "bf16", "world_size": 1}),
                     ("status", {"state": "preparing", "detail": ""}),
                     ("prepared", {"rows": {"train": 3893, "validation": 486, "test": 487},
                                   "labels": ["fresh", "rotten"], "trainable": 22_713_216, "total": 22_713_216}),
                     ("status", {"state": "training", "detail": ""})):
            yield item
            emitted += 1
    step = start_step
    while emitted < count - (1 if finished else 0):
        step += 1
        batch = [("train_log", {"step": step, "epoch": step / 250, "loss": round(0.7 * 0.9995 ** step + 0.05, 5),
                                "learning_rate": 5e-5, "grad_norm": 1.0}),
                 ("progress", {"step": step, "max_steps": 10 ** 7, "epoch": step / 250, "samples_per_s": 42.5,
                               "tokens_per_s": 3000.0, "eta_s": 1e5, "elapsed_s": step * 0.4})]
        if step % 25 == 0:
            batch.append(("heartbeat", {"step": step}))
        if step % 250 == 0:
            batch.append(("eval", _eval(step)))
            batch.append(("checkpoint", {"step": step, "path": f"checkpoints/step-{step}", "best_metric": 0.8}))
        for item in batch:
            if emitted >= count - (1 if finished else 0):
                break
            yield item
            emitted += 1
    if finished:
        yield "finished", {"state": "finished", "train_loss": 0.3, "results": "results.json"}


# --------------------------------------------------------------------------- first paint

PAINT_CHILD = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from tui.app import FtwApp
    imported = time.perf_counter()
    from tui.screens.sessions import SessionsScreen
    marks = {}

    def mark(name):
        marks.setdefault(name, (time.perf_counter(), time.time()))

    original = SessionsScreen.show_sessions

    def show_sessions(self, summaries):
        original(self, summaries)
        self.call_after_refresh(lambda: (mark("list"), self.app.exit()))

    SessionsScreen.show_sessions = show_sessions

    mounted = FtwApp.on_mount

    def on_mount(self):
        mounted(self)
        self.call_after_refresh(lambda: mark("frame"))

    FtwApp.on_mount = on_mount  # patched, not subclassed: CSS_PATH is relative to the class's file
    FtwApp(sys.argv[1], freeze_startup_objects=True).run(headless=True, size=(120, 40))
    out = {"import_s": imported - start, "torch_imported": "torch" in sys.modules}
    for name, (perf, wall) in marks.items():
        out[name + "_in_script_s"] = perf - start
        out[name + "_wall"] = wall
    print("RESULT " + json.dumps(out))
""")

IMPORT_CHILD = ("import sys, time, json; t = time.perf_counter(); import tui.app; "
                "print('RESULT ' + json.dumps({'import_s': time.perf_counter() - t, "
                "'torch_imported': 'torch' in sys.modules}))")


def _child(code: str, *args: str, timeout: float = 120) -> tuple[dict[str, Any], float]:
    """Run `python -c code args` in the repository root; its RESULT line and the spawn wall time."""
    spawned = time.time()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=common.ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(common.ROOT)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):]), spawned


def first_paint(sessions_dir: Path, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"frame_s": [], "list_s": [], "frame_in_script_s": [],
                                       "list_in_script_s": [], "import_app_s": [], "import_alone_s": []}
    torch_seen = False
    for _ in range(rounds):
        out, spawned = _child(PAINT_CHILD, str(sessions_dir))
        samples["frame_s"].append(out.get("frame_wall", out["list_wall"]) - spawned)
        samples["list_s"].append(out["list_wall"] - spawned)
        samples["frame_in_script_s"].append(out.get("frame_in_script_s", out["list_in_script_s"]))
        samples["list_in_script_s"].append(out["list_in_script_s"])
        samples["import_app_s"].append(out["import_s"])
        alone, _ = _child(IMPORT_CHILD)
        samples["import_alone_s"].append(alone["import_s"])
        torch_seen = torch_seen or out["torch_imported"] or alone["torch_imported"]
    # A bare interpreter's start-up, so the table can say how much of first paint is Python itself.
    bare = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - started)
    result = {name: common.median(values) for name, values in samples.items()}
    result.update({"rounds": rounds, "samples": samples, "python_startup_s": common.median(bare),
                   "sessions": len(list(sessions_dir.glob("*.toml"))), "torch_imported": torch_seen,
                   "target_s": PAINT_TARGET_S, "meets_target": result["list_s"] < PAINT_TARGET_S})
    return result


# --------------------------------------------------------------------------- key latency

def stream_events_here(path: str, rate: float, start_step: int) -> None:
    """Append synthetic events to a run's events.jsonl at `rate` per second until killed
    (catching up in bursts when late, as a worker's buffered writes would)."""
    from engine.core import protocol

    writer = protocol.EventWriter(Path(path))
    events = synthetic_events(10 ** 12, start_step=start_step, header=False)
    next_at = time.perf_counter()
    while True:
        while next_at <= time.perf_counter():
            kind, data = next(events)
            writer.emit(kind, **data)
            next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))


class StreamWriter:
    """A worker stand-in: another process appending events to the run's log, as a real worker
    does (a thread in the TUI's process would compete with it for the interpreter lock)."""

    def __init__(self, path: Path, rate: float, start_step: int):
        self.path, self.rate, self.start_step = path, rate, start_step
        self.first_seq = protocol_last_seq(path)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        code = "import sys; from bench import tui; tui.stream_events_here(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))"
        self.process = subprocess.Popen([sys.executable, "-c", code, str(self.path), str(self.rate),
                                         str(self.start_step)], cwd=common.ROOT,
                                        env={**os.environ, "PYTHONPATH": str(common.ROOT)})

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    @property
    def seq(self) -> int:
        return protocol_last_seq(self.path)

    @property
    def written(self) -> int:
        return self.seq - self.first_seq


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class EffectClock:
    """When a key's effect happened, and when the first frame after it was drawn, both seen from
    inside the app: the effect's condition is checked after every message the app handles, and
    each compositor refresh (a frame for the terminal) is timed. A poll from outside the app sees
    the effect only when the app next yields, which can be after the frame that drew it; waiting
    then for "the next frame" timed a later, unrelated frame (such as a scrollbar's repaint)."""

    def __init__(self):
        self.condition: Any = None
        self.effect_at: float | None = None
        self.painted_at: float | None = None

    def expect(self, condition) -> None:
        self.condition, self.effect_at, self.painted_at = condition, None, None

    def install(self) -> None:
        from textual.message_pump import MessagePump
        from textual.screen import Screen

        clock, dispatch, refresh = self, MessagePump._dispatch_message, Screen._compositor_refresh

        async def dispatch_and_check(pump, message):
            result = await dispatch(pump, message)
            if clock.condition is not None and clock.effect_at is None and clock.condition():
                clock.effect_at = time.perf_counter()
            return result

        def refresh_and_time(screen) -> None:
            refresh(screen)
            if clock.effect_at is not None and clock.painted_at is None:
                clock.painted_at = time.perf_counter()
                clock.condition = None

        MessagePump._dispatch_message = dispatch_and_check
        Screen._compositor_refresh = refresh_and_time


def key_latency(sessions_dir: Path, presses: int, rate: float, warm_s: float = 1.0) -> dict[str, Any]:
    """In a fresh process, like the real TUI (not the harness's, which holds torch and a large
    heap; and pytest's replaced stdin would stall Textual's test driver)."""
    out, _ = _child(CALL_CHILD, "key_latency_here", json.dumps([str(sessions_dir), presses, rate, warm_s]),
                    timeout=120 + presses)
    return out


def key_latency_here(sessions_dir: str, presses: int, rate: float, warm_s: float) -> dict[str, Any]:
    return asyncio.run(_key_latency(Path(sessions_dir), presses, rate, warm_s))


async def _key_latency(sessions_dir: Path, presses: int, rate: float, warm_s: float) -> dict[str, Any]:
    from textual import events as textual_events

    from engine.core import runs, session as session_format
    from tests.test_tui_support import FakeRunner  # the recorded engine answers the TUI tests use
    from tui.app import FtwApp
    from tui.screens.session import SessionScreen

    session = session_format.load(sessions_dir / f"{SESSION}.toml")
    events_path = runs.paths(session).events
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name=SESSION, alerts=False,
                 freeze_startup_objects=True)  # as `ftw` runs it

    async def until(condition, timeout: float = 10.0) -> None:
        deadline = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > deadline:
                raise TimeoutError("the app did not reach the expected state")
            await asyncio.sleep(0.001)

    clock = EffectClock()
    clock.install()

    async def press(key: str, done) -> float:
        """Seconds from the key arriving to the first frame drawn after its effect."""
        clock.expect(done)
        started = time.perf_counter()
        app._driver.send_message(textual_events.Key(key, key if len(key) == 1 else None))  # as the terminal driver
        await until(lambda: clock.painted_at is not None)
        return clock.painted_at - started

    async def measure_tabs(screen: SessionScreen, count: int) -> list[float]:
        latencies = []
        for i in range(count):
            key, wanted = ("6", "results") if i % 2 == 0 else ("5", "run")
            latencies.append(await press(key, lambda: screen.active_tab == wanted))
            await asyncio.sleep(0.03 + 0.02 * (i % 3))  # a fast typist, not a queue of keys
        return latencies

    async def measure_cursor(screen: SessionScreen, count: int) -> list[float]:
        """down/up in the Run tab's evaluation table, between its first two rows (off the last
        row the cursor stays put while rows stream in)."""
        table = screen.query_one("#eval-table")
        table.focus()
        table.move_cursor(row=0, animate=False)
        await until(lambda: app.focused is table and table.cursor_row == 0)
        await asyncio.sleep(0.1)  # the focus change repainted, as before a user's first key
        latencies = []
        for i in range(count):
            key, wanted = ("down", 1) if i % 2 == 0 else ("up", 0)
            latencies.append(await press(key, lambda: table.cursor_row == wanted))
            await asyncio.sleep(0.03 + 0.02 * (i % 3))
        return latencies

    async def measure(screen: SessionScreen, count: int) -> dict[str, list[float]]:
        tabs = await measure_tabs(screen, count)
        cursor = await measure_cursor(screen, count)
        screen.focus_pane("run")
        return {"tab": tabs, "cursor": cursor}

    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: isinstance(app.screen, SessionScreen))
        screen: SessionScreen = app.screen
        await pilot.press("5")
        await until(lambda: screen.active_tab == "run")
        initial_seq = protocol_last_seq(events_path)
        await until(lambda: screen.run_state.last_seq >= initial_seq)  # the replay is shown
        idle = await measure(screen, max(2, presses // 2))
        stream = StreamWriter(events_path, rate, start_step=screen.run_state.step)
        stream.start()
        try:
            await asyncio.sleep(warm_s)
            seq0, t0 = screen.run_state.last_seq, time.perf_counter()
            written0 = stream.written
            loaded = await measure(screen, presses)
            seq1, t1 = screen.run_state.last_seq, time.perf_counter()
            written1 = stream.written
        finally:
            stream.stop()
        lag_events = stream.seq - screen.run_state.last_seq
        # Leaving run_test closes the app. Not ctrl+q: an exit while the tab underline still
        # animates leaves Pilot.press waiting for an animation the stopped app never finishes.
    window = t1 - t0

    def summary(values: list[float]) -> dict[str, Any]:
        return {"presses": len(values), "p50_s": _percentile(values, 50), "p99_s": _percentile(values, 99),
                "max_s": max(values), "mean_s": sum(values) / len(values)}

    def kind(name: str, keys: str) -> dict[str, Any]:
        loaded_summary = summary(loaded[name])
        return {"keys": keys, "idle": summary(idle[name]), "loaded": loaded_summary,
                "meets_target": loaded_summary["p50_s"] < KEY_TARGET_S and loaded_summary["p99_s"] < KEY_TARGET_S}

    return {"tab": kind("tab", "6/5: switch to the Results / Run tab"),
            "cursor": kind("cursor", "down/up in the Run tab's evaluation table"),
            "rate_target": rate, "written_per_s": (written1 - written0) / window,
            "consumed_per_s": (seq1 - seq0) / window, "lag_events_at_end": lag_events, "window_s": window,
            "target_s": KEY_TARGET_S}


def protocol_last_seq(path: Path) -> int:
    from engine.core import protocol

    return protocol.last_seq(path)


# --------------------------------------------------------------------------- memory

def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    (large) parent through fork+exec, so it would report the benchmark harness's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _state_summary(state) -> dict[str, Any]:
    return {"train_loss_points": len(state.train_loss.steps), "curve_stride": state.train_loss.stride,
            "evals": len(state.evals), "checkpoints": len(state.checkpoints), "warnings": len(state.warnings),
            "last_seq": state.last_seq, "step": state.step}


def reduce_memory(count: int) -> dict[str, Any]:
    """Fold `count` generated events (one at a time, never all in memory) through reduce."""
    from engine.core import protocol

    state = protocol.RunState()
    before, started = _rss_bytes(), time.perf_counter()
    for seq, (kind, data) in enumerate(synthetic_events(count), start=1):
        protocol.reduce(state, {"v": 1, "seq": seq, "ts": 1.7e9 + seq / 200, "type": kind, "data": data})
    elapsed = time.perf_counter() - started
    return {"events": count, "rss_before": before, "rss_after": _rss_bytes(), "peak": _peak_bytes(),
            "seconds": elapsed, "events_per_s": count / elapsed, **_state_summary(state)}


def watcher_memory(path: str) -> dict[str, Any]:
    """One replay of a whole log by the Run tab's follower, as when a session opens."""
    from engine.core.runs import RunPaths
    from tui.run_watch import RunEventsLogged, RunFollower, RunUpdated

    run = RunPaths(Path(path).parent)
    posted = {"updated": 0, "logged_events": 0}

    def post(message):
        if isinstance(message, RunUpdated):
            posted["updated"] += 1
        elif isinstance(message, RunEventsLogged):
            posted["logged_events"] += len(message.events)

    follower = RunFollower(run, post, lambda: True)
    before, started = _rss_bytes(), time.perf_counter()
    while follower._read(replaying=True):
        pass  # chunk by chunk, as RunFollower.follow replays a log when a session opens
    elapsed = time.perf_counter() - started
    return {"rss_before": before, "rss_after": _rss_bytes(), "peak": _peak_bytes(), "seconds": elapsed,
            "file_bytes": run.events.stat().st_size, **posted, **_state_summary(follower.state)}


CALL_CHILD = ("import json, sys; from bench import tui; "
              "out = getattr(tui, sys.argv[1])(*json.loads(sys.argv[2])); print('RESULT ' + json.dumps(out))")


def memory(folder: Path, events: int, watch_events: int) -> dict[str, Any]:
    from engine.core import protocol

    reduced, _ = _child(CALL_CHILD, "reduce_memory", json.dumps([events]), timeout=3600)
    log = folder / f"watch-{time.time_ns()}" / "events.jsonl"
    writer = protocol.EventWriter(log)
    for kind, data in synthetic_events(watch_events):
        writer.emit(kind, **data)
    writer.close()
    try:
        watched, _ = _child(CALL_CHILD, "watcher_memory", json.dumps([str(log)]), timeout=3600)
        watched["events"] = watch_events
    finally:
        log.unlink(missing_ok=True)
    for item in (reduced, watched):
        item["rss_growth"] = item["rss_after"] - item["rss_before"]
        item["peak_growth"] = max(0, item["peak"] - item["rss_before"])
    return {"reduce": reduced, "watcher": watched, "max_curve_points": protocol.MAX_CURVE_POINTS,
            "bounded": reduced["train_loss_points"] <= protocol.MAX_CURVE_POINTS
            and watched["train_loss_points"] <= protocol.MAX_CURVE_POINTS}


# --------------------------------------------------------------------------- output

def render(result: dict[str, Any]) -> str:
    paint, keys, mem = result["first_paint"], result["key_latency"], result["memory"]
    ms = lambda s: 1000 * s  # noqa: E731
    mib = lambda b: b / 2 ** 20  # noqa: E731
    paint_rows = [["first frame (spawn -> frame)", ms(paint["frame_s"])],
                  ["sessions list shown (spawn -> frame)", ms(paint["list_s"])],
                  ["  of which python start-up (bare `python -c pass`)", ms(paint["python_startup_s"])],
                  ["  of which `import tui.app` (in the app process)", ms(paint["import_app_s"])],
                  ["`import tui.app` alone (fresh process)", ms(paint["import_alone_s"])]]
    out = [common.table(f"tui: first paint, {paint['sessions']} sessions, median of {paint['rounds']} fresh processes",
                        ["what", "ms"], paint_rows,
                        f"target < {ms(paint['target_s']):.0f} ms: {'met' if paint['meets_target'] else 'NOT met'}; "
                        f"torch imported: {'yes' if paint['torch_imported'] else 'no'}")]
    key_rows = []
    for kind in ("tab", "cursor"):
        for load in ("idle", "loaded"):
            row = keys[kind][load]
            shown = "idle" if load == "idle" else f"streaming {keys['rate_target']:.0f} events/s"
            key_rows.append([keys[kind]["keys"] if load == "idle" else "", shown, row["presses"],
                             ms(row["p50_s"]), ms(row["p99_s"]), ms(row["max_s"])])
    verdict = "; ".join(f"{kind} {'met' if keys[kind]['meets_target'] else 'NOT met'}" for kind in ("tab", "cursor"))
    out.append(common.table("tui: key latency on an open session (key -> its effect repainted)",
                            ["keys", "load", "presses", "p50 ms", "p99 ms", "max ms"], key_rows,
                            f"events written {keys['written_per_s']:.0f}/s, consumed by the Run tab "
                            f"{keys['consumed_per_s']:.0f}/s, {keys['lag_events_at_end']} behind at the end; "
                            f"target p50/p99 < {ms(keys['target_s']):.0f} ms while streaming: {verdict}"))
    mem_rows = [[f"reduce() x {r['events']:,}", mib(r["rss_growth"]), mib(r["peak_growth"]), r["seconds"],
                 r["train_loss_points"], r["evals"]] for r in [mem["reduce"]]]
    w = mem["watcher"]
    mem_rows.append([f"Run tab replay of {w['events']:,} ({mib(w['file_bytes']):.0f} MiB)", mib(w["rss_growth"]),
                     mib(w["peak_growth"]), w["seconds"], w["train_loss_points"], w["evals"]])
    out.append(common.table("tui: memory after many events (fresh process each)",
                            ["what", "RSS growth MiB", "peak growth MiB", "s", "loss points", "evals kept"], mem_rows,
                            f"curve bounded by MAX_CURVE_POINTS={mem['max_curve_points']}: "
                            f"{'yes' if mem['bounded'] else 'NO'}; reduce: "
                            f"{mem['reduce']['events_per_s']:,.0f} events/s"))
    return "\n\n".join(out)
