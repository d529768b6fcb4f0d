"""The event log: append-only, sequenced, tail-able; reduce rebuilds a run's state from it."""

from __future__ import annotations

import json

import pytest

from engine.core import protocol


def test_writer_continues_the_sequence_of_an_existing_log(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = protocol.EventWriter(path)
    writer.emit(protocol.STATUS, state="training")
    writer.emit(protocol.PROGRESS, step=1, max_steps=10)
    writer.close()
    again = protocol.EventWriter(path)
    event = again.emit(protocol.HEARTBEAT, step=1)
    again.close()
    assert event["seq"] == 3
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3]
    assert all(e["v"] == protocol.VERSION and "ts" in e for e in lines)


def test_reader_leaves_a_half_written_line_for_later_and_skips_corrupt_ones(tmp_path):
    path = tmp_path / "events.jsonl"
    good = json.dumps(protocol.envelope(1, protocol.STATUS, {"state": "training"}))
    path.write_text(good + "\n{not json}\n" + '{"v":1,"seq":3,"type":"heartbeat"')
    events, offset = protocol.read_events(path)
    assert [e["seq"] for e in events] == [1]
    with open(path, "a") as handle:
        handle.write(',"data":{"step":4}}\n')
    more, _ = protocol.read_events(path, offset)
    assert [e["seq"] for e in more] == [3]


def test_replay_rebuilds_progress_curves_tables_and_results(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = protocol.EventWriter(path)
    writer.emit(protocol.RUN_STARTED, run_id="r", resume=False, pid=1, threads=2)
    writer.emit(protocol.PREPARED, rows={"train": 8}, labels=["a", "b"])
    for step in range(1, 5):
        writer.emit(protocol.TRAIN_LOG, step=step, loss=1.0 / step)
        writer.emit(protocol.PROGRESS, step=step, max_steps=4, epoch=step / 4)
    writer.emit(protocol.EVAL, split="validation", step=2, macro_f1=0.5, accuracy=0.5)
    writer.emit(protocol.EVAL, split="validation", step=4, macro_f1=0.7, accuracy=0.75)
    writer.emit(protocol.EVAL, split="test", step=4, macro_f1=0.6, accuracy=0.7)
    writer.emit(protocol.FINISHED, state="finished")
    writer.close()
    state, offset = protocol.replay(path)
    assert state.state == "finished" and state.terminal
    assert state.train_loss.steps == [1, 2, 3, 4] and state.train_loss.values[-1] == 0.25
    assert [e["step"] for e in state.evals] == [2, 4] and state.best_eval["macro_f1"] == 0.7
    assert state.test["accuracy"] == 0.7 and state.progress == 1.0
    assert offset == path.stat().st_size


def test_a_resumed_run_keeps_history_and_replaces_rows_past_the_resume_point():
    state = protocol.RunState()
    for event in [
        protocol.envelope(1, protocol.RUN_STARTED, {"resume": False}),
        protocol.envelope(2, protocol.EVAL, {"split": "validation", "step": 5, "macro_f1": 0.5}),
        protocol.envelope(3, protocol.EVAL, {"split": "validation", "step": 10, "macro_f1": 0.6}),
        protocol.envelope(4, protocol.RUN_STARTED, {"resume": True, "from_step": 5}),
        protocol.envelope(5, protocol.EVAL, {"split": "validation", "step": 10, "macro_f1": 0.61}),
    ]:
        protocol.reduce(state, event)
    assert [(e["step"], e["macro_f1"]) for e in state.evals] == [(5, 0.5), (10, 0.61)]
    assert state.resumed == 1


def test_a_fresh_run_resets_history():
    state = protocol.RunState()
    protocol.reduce(state, protocol.envelope(1, protocol.EVAL, {"split": "validation", "step": 5}))
    protocol.reduce(state, protocol.envelope(2, protocol.RUN_STARTED, {"resume": False}))
    assert state.evals == []


def test_a_snapshot_stays_as_it_was_while_the_state_moves_on():
    state = protocol.RunState()
    events = [
        protocol.envelope(1, protocol.RUN_STARTED, {"resume": False}),
        protocol.envelope(2, protocol.TRAIN_LOG, {"step": 1, "loss": 0.9}),
        protocol.envelope(3, protocol.EVAL, {"split": "validation", "step": 1, "macro_f1": 0.5}),
        protocol.envelope(4, protocol.CHECKPOINT, {"step": 1}),
        protocol.envelope(5, protocol.WARNING, {"message": "slow"}),
    ]
    for event in events:
        protocol.reduce(state, event)
    snap = state.snapshot()
    frozen = repr(snap)
    for seq, (kind, data) in enumerate([
        (protocol.TRAIN_LOG, {"step": 2, "loss": 0.8}),
        (protocol.EVAL, {"split": "validation", "step": 2, "macro_f1": 0.6}),
        (protocol.CHECKPOINT, {"step": 2}), (protocol.WARNING, {"message": "slower"}),
        (protocol.ERROR, {"message": "boom"}), (protocol.COMMAND_ACK, {"command": "stop"}),
        (protocol.EVAL, {"split": "test", "accuracy": 0.7}), (protocol.FINISHED, {"state": "failed"}),
    ], start=6):
        protocol.reduce(state, protocol.envelope(seq, kind, data))
    assert repr(snap) == frozen
    assert snap.train_loss.values == [0.9] and state.train_loss.values == [0.9, 0.8]
    assert len(snap.evals) == 1 and len(state.evals) == 2 and state.state == "failed"
    protocol.reduce(state, protocol.envelope(14, protocol.RUN_STARTED, {"resume": False}))
    assert repr(snap) == frozen  # a fresh run clears the state, not the snapshot


def test_a_replay_without_per_step_events_keeps_state_evaluations_and_the_end(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = protocol.EventWriter(path)
    writer.emit(protocol.RUN_STARTED, resume=False)
    writer.emit(protocol.STATUS, state="training")
    for step in range(1, 301):
        writer.emit(protocol.TRAIN_LOG, step=step, loss=1 / step)
        writer.emit(protocol.PROGRESS, step=step, max_steps=300)
        if step % 100 == 0:
            writer.emit(protocol.EVAL, split="validation", step=step, macro_f1=step / 400)
            writer.emit(protocol.CHECKPOINT, step=step)
    # "type" inside data is not the envelope's type: this warning must survive the skipping
    writer.emit(protocol.WARNING, message="odd", type=protocol.TRAIN_LOG)
    writer.emit(protocol.EVAL, split="test", accuracy=0.8)
    writer.emit(protocol.FINISHED, state="finished")
    writer.close()
    full, full_offset = protocol.replay(path)
    light, light_offset = protocol.replay(path, skip_types=protocol.PER_STEP_TYPES)
    assert light_offset == full_offset == path.stat().st_size
    assert (light.state, light.evals, light.checkpoints, light.test, light.finished, light.warnings) == \
        (full.state, full.evals, full.checkpoints, full.test, full.finished, full.warnings)
    assert light.warnings == ["odd"] and len(light.evals) == 3
    assert full.step == 300 and len(full.train_loss.steps) == 300
    assert light.train_loss.steps == []  # what the light replay leaves out
    assert light.step == 300  # the step it knows from the checkpoints and the end, not from progress


def test_memory_stays_bounded_over_a_million_events():
    state = protocol.RunState()
    for step in range(1_000_000):
        protocol.reduce(state, {"type": protocol.TRAIN_LOG, "seq": step, "data": {"step": step, "loss": 1.0}})
    assert len(state.train_loss.steps) <= protocol.MAX_CURVE_POINTS
    assert state.train_loss.steps[0] == 0 and state.train_loss.steps[-1] > 900_000


def test_commands_round_trip(tmp_path):
    path = tmp_path / "commands.jsonl"
    first = protocol.send_command(path, "pause")
    second = protocol.send_command(path, "stop")
    commands, offset = protocol.read_commands(path, 0)
    assert [(c["id"], c["command"]) for c in commands] == [(first, "pause"), (second, "stop")]
    assert protocol.read_commands(path, offset)[0] == []


def test_long_logs_are_read_in_bounded_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "READ_CHUNK_BYTES", 256)
    path = tmp_path / "events.jsonl"
    writer = protocol.EventWriter(path)
    for step in range(1, 201):
        writer.emit(protocol.TRAIN_LOG, step=step, loss=1.0)
    writer.emit(protocol.WARNING, message="x" * 1000)  # one line longer than a chunk
    writer.emit(protocol.FINISHED, state="finished")
    writer.close()
    first, offset = protocol.read_events(path)
    assert 0 < len(first) < 200 and offset <= 256
    state, end = protocol.replay(path)
    assert state.state == "finished" and state.train_loss.steps[-1] == 200
    assert state.warnings == ["x" * 1000] and end == path.stat().st_size
    assert len(list(protocol.iter_events(path))) == 202


def test_a_refused_resume_leaves_the_previous_run_as_it_was():
    """A resume the worker refuses (bad input before training) is recorded, but the run it would
    have continued still shows as it ended: finished, with its evaluations and test results."""
    state = protocol.RunState()
    for event in [
        protocol.envelope(1, protocol.RUN_STARTED, {"resume": False, "run_id": "first"}),
        protocol.envelope(2, protocol.PREPARED, {"labels": ["a", "b"]}),
        protocol.envelope(3, protocol.EVAL, {"split": "validation", "step": 10, "macro_f1": 0.6}),
        protocol.envelope(4, protocol.EVAL, {"split": "test", "step": 10, "macro_f1": 0.7}),
        protocol.envelope(5, protocol.FINISHED, {"state": "finished", "step": 10}),
        protocol.envelope(6, protocol.RUN_STARTED, {"resume": True, "from_step": 10, "run_id": "second"}),
        protocol.envelope(7, protocol.STATUS, {"state": "preparing"}),
        protocol.envelope(8, protocol.PREPARED, {"labels": ["a", "b", "c"]}),
        protocol.envelope(9, protocol.ERROR, {"message": "the session changed", "fix": "--restart",
                                              "bad_input": True}),
        protocol.envelope(10, protocol.FINISHED, {"state": "failed", "reason": "the session changed",
                                                  "bad_input": True, "refused": True}),
    ]:
        protocol.reduce(state, event)
    assert state.state == "finished" and state.terminal
    assert state.finished == {"state": "finished", "step": 10} and state.run_id == "first"
    assert state.test["macro_f1"] == 0.7 and [e["step"] for e in state.evals] == [10]
    assert state.prepared["labels"] == ["a", "b"] and state.resumed == 0
    assert state.refused["reason"] == "the session changed"
    assert state.errors[-1]["message"] == "the session changed", "the refusal itself stays visible"
    assert state.last_seq == 10
    protocol.reduce(state, protocol.envelope(11, protocol.RUN_STARTED, {"resume": True, "from_step": 10}))
    assert state.refused == {} and state.state == "starting"


def test_a_refusal_before_the_worker_started_the_run_changes_no_state():
    state = protocol.RunState()
    protocol.reduce(state, protocol.envelope(1, protocol.RUN_STARTED, {"resume": False}))
    protocol.reduce(state, protocol.envelope(2, protocol.FINISHED, {"state": "stopped", "step": 4}))
    protocol.reduce(state, protocol.envelope(3, protocol.FINISHED, {"state": "failed", "refused": True,
                                                                    "bad_input": True, "reason": "no checkpoint"}))
    assert state.state == "stopped" and state.finished["step"] == 4 and state.refused["reason"] == "no checkpoint"


# ---------------------------------------------------------------- hostile logs

import contextlib  # noqa: E402
import io  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine.core import render  # noqa: E402

# Valid JSON whose shape is wrong for what it claims to be: each crashed a reader before.
WRONG_SHAPES = [
    {"v": 1, "seq": 2, "ts": 1.7e9, "type": "eval", "data": {"split": "validation", "step": 1, "per_class": "str"}},
    {"v": 1, "seq": 3, "ts": 1.7e9, "type": "eval", "data": None},
    {"v": 1, "seq": 4, "ts": 1.7e9, "type": "status", "data": {"state": 7}},
    {"v": 1, "seq": 5, "ts": 1.7e9, "type": "prepared", "data": {"labels": "ab", "rows": [1]}},
    {"v": 1, "seq": 6, "ts": 1.7e9, "type": "eval", "data": {"split": "test", "accuracy": "high"}},
    {"v": 1, "seq": 7, "ts": 1e300, "type": "warning", "data": {"message": "from the far future"}},
    {"v": 1, "seq": 8, "ts": 1.7e9, "type": "progress", "data": {"step": 3, "eta_s": 1e400}},
    {"v": 1, "seq": 9, "ts": 1.7e9, "type": "finished", "data": {"state": "finished", "test": ["x"]}},
    [1, 2, 3],
    "a string",
]


def _log_with_wrong_shapes(path):
    good = [protocol.envelope(1, protocol.RUN_STARTED, {"run_id": "r", "resume": False}),
            protocol.envelope(10, protocol.EVAL, {"split": "test", "step": 4, "accuracy": 0.75, "macro_f1": 0.5,
                                                  "labels": ["neg", "pos"],
                                                  "per_class": {"neg": {"f1": 0.5, "support": 2}}}),
            protocol.envelope(11, protocol.FINISHED, {"state": "finished"})]
    lines = [json.dumps(good[0])] + [json.dumps(bad) for bad in WRONG_SHAPES] + ["{not json"] + \
        [json.dumps(event) for event in good[1:]]
    path.write_text("\n".join(lines) + "\n")
    return len(WRONG_SHAPES) + 1  # and the line that is not JSON


def test_wrong_shaped_events_are_skipped_and_counted(tmp_path):
    path = tmp_path / "events.jsonl"
    bad = _log_with_wrong_shapes(path)
    state, _ = protocol.replay(path)
    assert state.skipped_events == bad
    assert state.state == "finished" and state.test["accuracy"] == 0.75


def test_show_status_list_and_attach_read_a_log_with_wrong_shaped_events(tmp_path):
    from tests.runs_helpers import ftw

    sessions = tmp_path / "sessions"
    assert ftw("new", "s", sessions=sessions).returncode == 0
    (sessions / "s").mkdir()
    bad = _log_with_wrong_shapes(sessions / "s" / "events.jsonl")
    shown = ftw("show", "s", sessions=sessions, timeout=60)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert f"skipped {bad} unreadable line(s)" in shown.stdout and "accuracy 0.7500" in shown.stdout
    assert json.loads(ftw("show", "s", "--json", sessions=sessions, timeout=60).stdout)["skipped_events"] == bad
    for command in (("status", "s"), ("list",), ("status", "--json"), ("attach", "s")):
        result = ftw(*command, sessions=sessions, timeout=60)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)
        assert "finished" in result.stdout, (command, result.stdout)


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Events near real ones: a real type and some of its real keys, with any JSON as the values.
_known_keys = sorted({key for shape in protocol.EVENT_SHAPES.values() for key in shape})
_near_event = st.fixed_dictionaries(
    {"type": st.sampled_from(protocol.EVENT_TYPES) | _json, "data": st.dictionaries(
        st.sampled_from(_known_keys), _json, max_size=6) | _json},
    optional={"v": _json, "seq": _json, "ts": _json})


def _render_like_every_reader(state, events):
    """What show, status, list, attach and the TUI draw from a state (each crashed on some shapes)."""
    printer = render.Printer(tty=False)
    for event in events:
        if protocol.is_valid_event(event):
            printer.show(event, state)
    printer.finish(state)
    render.print_run_summary(state)
    from engine.core.runs import RunStatus

    item = RunStatus("s", state.state, None, state).to_dict()
    json.dumps(item, default=str)
    render.status_line(dict(item, model="m"))
    # and what the TUI draws from the same state and events (its Run tab line, its event log)
    from tui.run_watch import is_alarming
    from tui.widgets.run.event_log import describe
    from tui.widgets.run.run_pane import status_text

    for alive in (True, False):
        status_text(state, alive)
    for event in events:
        if protocol.is_valid_event(event):
            describe(event)
            is_alarming(event)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_near_event | _json, max_size=12))
def test_any_json_as_events_never_raises(tmp_path_factory, events):
    state = protocol.RunState()
    for event in events:
        protocol.reduce(state, event)
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    replayed, _ = protocol.replay(path)
    assert replayed.skipped_events == state.skipped_events == sum(not protocol.is_valid_event(e) for e in events)
    with contextlib.redirect_stdout(io.StringIO()):
        _render_like_every_reader(state, events)
        _render_like_every_reader(replayed, events)


def test_commands_of_the_wrong_shape_are_ignored(tmp_path):
    """The worker reads commands.jsonl at every step: junk there must not stop a run."""
    path = tmp_path / "commands.jsonl"
    path.write_text('[1]\n"stop"\nnull\n{"command": "stop", "id": 7}\n{"command": "halt"}\n{not json\n')
    protocol.send_command(path, "pause")
    commands, offset = protocol.read_commands(path, 0)
    assert [c["command"] for c in commands] == ["pause"] and offset == path.stat().st_size


SAID_EVENTS = [
    ("run_started", {"run_id": "r", "resume": True, "from_step": 40, "device": "cpu", "precision": "bf16", "threads": 2}),
    ("checkpoint", {"step": 40, "path": "checkpoints/checkpoint-40"}),
    ("warning", {"message": "3 examples were truncated"}),
    ("oom_retry", {"batch_size": 8, "gradient_accumulation": 2}),
    ("error", {"message": "no space left on device", "fix": "free 2 GB"}),
    ("command_ack", {"id": "a", "command": "eval", "ok": False, "detail": "the run is paused; resume it"}),
    ("status", {"state": "paused", "detail": "p pressed"}),
    ("prepared", {"rows": {"train": 80, "validation": 10}, "labels": ["a", "b"], "trainable": 5, "total": 10}),
]


@pytest.mark.parametrize("kind, data", SAID_EVENTS, ids=[kind for kind, _ in SAID_EVENTS])
def test_ftw_attach_and_the_tui_event_log_say_an_event_in_the_same_words(capsys, kind, data):
    """Events were worded three times (the CLI's printer, the TUI's log, the app's alerts)."""
    from engine.core import describe
    from tui.widgets.run.event_log import describe as log_line

    event = {"v": 1, "seq": 1, "ts": 0, "type": kind, "data": data}
    words = describe.describe(event)
    render.Printer(tty=False).show(event, protocol.RunState())
    printed, logged = capsys.readouterr().out, log_line(event)[0]
    assert words.text and words.text in printed and words.text in logged
    assert not words.fix or (f"fix: {words.fix}" in printed and f"fix: {words.fix}" in logged)
