"""Bad input through the real CLI: one message with the problem and the fix, exit 2, no traceback,
nothing written."""

from __future__ import annotations

import json

import pytest

from tests.runs_helpers import ftw, ftw_here, write_reviews_csv
from tests.tiny import tiny_model_dir


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_clean_failure(result, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "fix:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def workspace(tmp_path):
    sessions = tmp_path / "sessions"
    data = write_reviews_csv(tmp_path / "reviews.csv", rows=60)
    model = tiny_model_dir(tmp_path, "bert")
    assert ftw("new", "ok", "--model", str(model), "--data", str(data), sessions=sessions).returncode == 0
    return tmp_path, sessions, data, model


def edit_by_hand(sessions, key, value):
    """The session file changed in an editor: no `ftw set` checks on the way."""
    from engine.core import session as session_format

    session_format.save(session_format.load(sessions / "ok.toml").with_value(key, value))


def check_with(workspace, key, value):
    tmp_path, sessions, _, _ = workspace
    edit_by_hand(sessions, key, value)
    before = snapshot(tmp_path)
    result = ftw_here("check", "ok", sessions=sessions)
    assert snapshot(tmp_path) == before, "a failed check writes nothing"
    return result


def test_missing_data_file(workspace):
    tmp_path, sessions, _, _ = workspace
    assert_clean_failure(ftw("set", "ok", "data.source=nowhere.csv", sessions=sessions), "nowhere.csv")
    path = sessions / "ok.toml"  # the same mistake made by hand in the file
    path.write_text(path.read_text().replace("reviews.csv", "nowhere.csv"))
    before = snapshot(tmp_path)
    assert_clean_failure(ftw_here("check", "ok", sessions=sessions), "nowhere.csv")
    assert snapshot(tmp_path) == before


def test_malformed_csv(workspace):
    tmp_path = workspace[0]
    (tmp_path / "bad.csv").write_text('text,label\n"unclosed quote,pos\nfine,neg\n')
    assert_clean_failure(check_with(workspace, "data.source", str(tmp_path / "bad.csv")), "bad.csv")


def test_wrong_label_column_lists_the_columns(workspace):
    assert_clean_failure(check_with(workspace, "data.label_column", "labl"), "labl", "label")
    assert_clean_failure(ftw("set", "ok", "data.label_column=labl", sessions=workspace[1]), "labl", "label")


def test_one_class_only(workspace):
    tmp_path = workspace[0]
    (tmp_path / "one.csv").write_text("text,label\n" + "".join(f"row {i},pos\n" for i in range(30)))
    assert_clean_failure(check_with(workspace, "data.source", str(tmp_path / "one.csv")), "one")


def test_model_folder_without_tokenizer(workspace):
    tmp_path, _, _, model = workspace
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((model / name).read_bytes())
    assert_clean_failure(check_with(workspace, "model.source", str(bare)), "tokenizer")


def test_unknown_builtin(workspace):
    _, sessions, _, _ = workspace
    assert_clean_failure(ftw("set", "ok", "model.source=builtin:gpt5", sessions=sessions), "builtin:minilm-l6")
    path = sessions / "ok.toml"  # typed by hand into the file instead
    text = path.read_text()
    path.write_text(text.replace(text.split("source = ")[1].split("\n")[0], '"builtin:gpt5"', 1))
    assert_clean_failure(ftw_here("check", "ok", sessions=sessions), "builtin:minilm-l6")


def test_session_key_typo_gets_did_you_mean(workspace):
    _, sessions, _, _ = workspace
    path = sessions / "ok.toml"
    path.write_text(path.read_text() + "\n[train]\nbatch_sise = 8\n")
    assert_clean_failure(ftw_here("check", "ok", sessions=sessions), "did you mean 'batch_size'")
    assert_clean_failure(ftw("run", "ok", sessions=sessions), "batch_sise")
    assert not (sessions / "ok").exists(), "no run folder for a session that does not load"


def test_bad_hyperparameter_is_refused_and_not_written(workspace):
    _, sessions, _, _ = workspace
    before = (sessions / "ok.toml").read_bytes()
    assert_clean_failure(ftw("set", "ok", "train.learning_rate=-1", sessions=sessions), "train.learning_rate")
    assert (sessions / "ok.toml").read_bytes() == before


def test_names_cannot_escape_and_unknown_sessions_are_named(workspace):
    _, sessions, _, _ = workspace
    assert_clean_failure(ftw("new", "../evil", sessions=sessions), "not a valid session name")
    assert not (sessions.parent / "evil.toml").exists()
    assert_clean_failure(ftw("run", "okk", sessions=sessions), "did you mean 'ok'")


def test_using_a_model_before_training_says_how(workspace):
    _, sessions, _, _ = workspace
    assert_clean_failure(ftw_here("predict", "ok", "hello", sessions=sessions), "no trained model", "ftw run ok")
    assert_clean_failure(ftw("attach", "ok", sessions=sessions), "never run")


def test_json_errors_are_json(workspace):
    _, sessions, _, _ = workspace
    result = ftw_here("check", "nope", "--json", sessions=sessions)
    assert result.returncode == 2
    assert set(json.loads(result.stdout)["error"]) == {"problem", "fix"}


def test_non_finite_numbers_are_refused(workspace):
    _, sessions, _, _ = workspace
    assert_clean_failure(ftw("set", "ok", "train.epochs=inf", sessions=sessions), "train.epochs")
    assert_clean_failure(ftw("new", "x", "--set", "train.learning_rate=nan", sessions=sessions), "learning_rate")


def test_a_leading_sessions_dir_option_works_with_sub_commands(workspace):
    _, sessions, _, _ = workspace
    result = ftw("--sessions-dir", str(sessions), "list", sessions=sessions.parent / "elsewhere", timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stdout + result.stderr


def test_paths_typed_on_the_command_line_are_relative_to_the_current_folder(workspace):
    tmp_path, sessions, _, model = workspace
    here = tmp_path / "project"
    here.mkdir()
    write_reviews_csv(here / "mine.csv", rows=40)
    made = ftw("new", "rel", "--model", str(model), "--data", "mine.csv", sessions=sessions, cwd=here)
    assert made.returncode == 0, made.stderr
    from engine.core import session as session_format

    loaded = session_format.load(sessions / "rel.toml")
    assert loaded.resolve(loaded.data.source) == str(here / "mine.csv")
    assert_clean_failure(ftw("new", "typo", "--data", "mnie.csv", sessions=sessions, cwd=here), "mnie.csv")
    assert_clean_failure(ftw("new", "typo", "--model", "builtin:bert-tiny", sessions=sessions), "builtin:minilm-l6")
    assert not (sessions / "typo.toml").exists()


def test_export_into_a_file_and_preview_of_broken_data(workspace):
    tmp_path, sessions, _, _ = workspace
    (tmp_path / "one.csv").write_text("text,label\n" + "".join(f"row {i},pos\n" for i in range(30)))
    assert ftw("set", "ok", f"data.source={tmp_path / 'one.csv'}", sessions=sessions).returncode == 0
    assert ftw_here("preview", "ok", sessions=sessions).returncode == 2


@pytest.mark.parametrize("command", [("show", "ok", "--json"), ("show", "ok"), ("status", "--json"),
                                     ("status", "ok"), ("list",), ("preview", "ok", "--json")])
def test_output_into_a_closed_pipe_ends_quietly(workspace, command):
    """`ftw show ok --json | head -c 100`: the reader is gone before ftw writes (its end of the pipe
    is closed here first, so every write fails): no traceback, no message, the SIGPIPE status."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    _, sessions, _, _ = workspace
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "tui.launcher", *command], cwd=ROOT, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(ROOT)))
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == 141


@pytest.mark.parametrize("setting", ["text_column", "text_pair_column"])
def test_the_label_column_as_input_is_refused(workspace, setting):
    tmp_path, sessions, _, _ = workspace
    edit_by_hand(sessions, f"data.{setting}", "label")
    before = snapshot(tmp_path)
    assert_clean_failure(ftw_here("check", "ok", sessions=sessions), f"data.{setting} are both 'label'")
    assert snapshot(tmp_path) == before


def test_new_and_set_refuse_unreadable_data_and_wrong_columns_and_write_nothing(workspace):
    tmp_path, sessions, data, model = workspace
    (tmp_path / "bad.csv").write_text('text,label\n"unclosed quote,pos\nfine,neg\n')
    before = snapshot(tmp_path)
    assert_clean_failure(ftw("new", "b2", "--model", str(model), "--data", str(data), "--text-column", "txt",
                             sessions=sessions), "has no column 'txt'", "did you mean 'text'")
    assert_clean_failure(ftw("new", "b3", "--data", str(tmp_path / "bad.csv"), sessions=sessions),
                         "the quote opened on line 2 is never closed")
    assert_clean_failure(ftw("new", "leak", "--data", str(data), "--text-column", "label", "--label-column", "label",
                             sessions=sessions), "data.label_column and data.text_column are both 'label'")
    assert_clean_failure(ftw("set", "ok", "data.text_column=reviw", sessions=sessions), "has no column 'reviw'")
    assert_clean_failure(ftw("set", "ok", f"data.source={tmp_path / 'bad.csv'}", sessions=sessions), "never closed")
    both = ftw("set", "ok", "data.text_column=txet", "data.label_column=lable", sessions=sessions)
    assert_clean_failure(both, "no column 'txet'", "did you mean 'text'", "no column 'lable'", "did you mean 'label'")
    assert snapshot(tmp_path) == before, "nothing written"
    assert ftw("set", "ok", "data.max_rows=50", sessions=sessions).returncode == 0, "good data settings are saved"


def test_check_names_every_column_problem(workspace):
    _, sessions, _, _ = workspace
    edit_by_hand(sessions, "data.text_column", "txet")
    edit_by_hand(sessions, "data.label_column", "lable")
    assert_clean_failure(ftw_here("check", "ok", sessions=sessions), "no column 'txet'", "no column 'lable'",
                         "set data.text_column", "set data.label_column")


def test_preview_of_an_unreadable_file_prints_the_error_not_an_empty_table(workspace):
    tmp_path, sessions, _, _ = workspace
    (tmp_path / "bad.csv").write_text('text,label\n"unclosed quote,pos\nfine,neg\n')
    edit_by_hand(sessions, "data.source", str(tmp_path / "bad.csv"))
    result = ftw_here("preview", "ok", sessions=sessions)
    assert_clean_failure(result, "the quote opened on line 2 is never closed")
    assert result.stdout == ""
    edit_by_hand(sessions, "data.source", str(workspace[2]))
    edit_by_hand(sessions, "data.label_column", "lable")  # readable, one column wrong: rows and the problem
    shown = ftw_here("preview", "ok", sessions=sessions)
    assert shown.returncode == 2 and "columns: text, label" in shown.stdout and "did you mean 'label'" in shown.stdout
    assert "labels:" not in shown.stdout, "no empty label line"


def test_preview_of_settings_given_as_json_reads_them_and_writes_nothing(workspace):
    """The workbench previews the settings on its screen, saved or not (`--settings`): they replace
    the file's for the preview, a relative source still resolves beside the file, nothing is
    written, and settings that are not valid are refused like the file's would be."""
    _, sessions, _, _ = workspace
    (sessions / "other.csv").write_text("review,verdict\n" + "".join(f"row {i},{'yes' if i % 2 else 'no'}\n"
                                                                     for i in range(30)))
    settings = json.loads(ftw("show", "ok", "--json", sessions=sessions).stdout)["settings"]
    settings["data"].update(source="other.csv", text_column="review", label_column="verdict")
    before = snapshot(sessions)
    shown = ftw_here("preview", "ok", "--json", "--settings", json.dumps(settings), sessions=sessions)
    assert shown.returncode == 0, shown.stderr
    assert snapshot(sessions) == before
    preview = json.loads(shown.stdout)
    assert preview["columns"] == ["review", "verdict"] and preview["total"] == 30
    assert preview["label_distribution"] == {"no": 15, "yes": 15}
    assert json.loads(ftw_here("preview", "ok", "--json", sessions=sessions).stdout)["columns"] == ["text", "label"]
    assert_clean_failure(ftw_here("preview", "ok", "--settings", "{not json", sessions=sessions), "--settings is not JSON")
    settings["train"]["epochs"] = -1
    assert_clean_failure(ftw_here("preview", "ok", "--settings", json.dumps(settings), sessions=sessions), "train.epochs")
    assert snapshot(sessions) == before


def test_check_refuses_an_absurd_label_count_before_building_anything(workspace):
    """100k distinct labels with separate validation and test files: `check` used to say "ready",
    and the first evaluation then died allocating a 100k x 100k confusion matrix."""
    from engine.data import MAX_LABELS

    tmp_path, sessions, _, _ = workspace
    labels = 100 * MAX_LABELS
    for name in ("train", "validation", "test"):
        (tmp_path / f"{name}.csv").write_text(
            "text,label\n" + "".join(f"row {i} of {name},id{i}\n" for i in range(labels)))
    for key in ("source", "validation_source", "test_source"):
        edit_by_hand(sessions, f"data.{key}", str(tmp_path / f"{key.replace('_source', '').replace('source', 'train')}.csv"))
    before = snapshot(tmp_path)
    result = ftw_here("check", "ok", sessions=sessions)
    assert_clean_failure(result, f"{labels:,} distinct labels", f"at most {MAX_LABELS:,}", "data.label_column")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("text,missing", [
    ("", "is empty"),
    ('schema = 1\n[model]\nsource = "builtin:minilm-l6"\n[train]\nepochs = 2\n', "no data.source"),
    ('[model]\ntrust_remote_code = false\n[data]\nsource = "reviews.csv"\n', "no model.source"),
    ('[data]\ntext_column = "text"\n', "no model.source and no data.source"),
])
def test_a_session_that_does_not_say_what_it_trains_is_refused(workspace, text, missing):
    """A truncated or half-written file must not train the packaged model on the packaged data."""
    tmp_path, sessions, _, _ = workspace
    (sessions / "half.toml").write_text(text)
    before = snapshot(tmp_path)
    for command in (("check", "half"), ("run", "half", "--detach"), ("show", "half")):
        assert_clean_failure(ftw(*command, sessions=sessions), "half.toml", missing, "ftw new")
    assert snapshot(tmp_path) == before, "nothing started, nothing written"
    assert "invalid" in ftw("list", sessions=sessions).stdout


def test_set_keeps_comments_order_and_only_the_keys_set(tmp_path):
    """Users hand-edit session files: `ftw set` changes the values it is given and nothing else."""
    from tests.conftest import ROOT

    sessions = tmp_path / "sessions"
    sessions.mkdir()
    shipped = (ROOT / "sessions" / "minilm-3way.toml").read_text()
    hand_edited = shipped.replace("epochs = 1\n", "epochs = 1  # one pass is enough here\n", 1)
    assert hand_edited != shipped and hand_edited.startswith("#")
    (sessions / "mine.toml").write_text(hand_edited)
    result = ftw("set", "mine", "train.epochs=2", "train.learning_rate=5e-5", "train.warmup_ratio=0.1",
                 "train.scheduler=linear", sessions=sessions, timeout=60)
    assert result.returncode == 0, result.stderr
    written = (sessions / "mine.toml").read_text()
    # epochs changed in place with its comment; learning_rate is already 5e-5 (as typed); the two
    # keys the file lacked are added under [train] (scheduler set to its default: the user set it)
    expected = hand_edited.replace("epochs = 1  #", "epochs = 2.0  #").replace(
        "max_length = 128\n", 'max_length = 128\nwarmup_ratio = 0.1\nscheduler = "linear"\n')
    assert written == expected
    again = ftw("set", "mine", "train.epochs=1", sessions=sessions, timeout=60)  # back to the default
    assert again.returncode == 0 and "epochs = 1.0  # one pass is enough here" in (sessions / "mine.toml").read_text()


def test_set_works_on_a_file_with_a_boolean_key(tmp_path):
    """A true/false already in the file (tomlkit returns it as a plain bool) is no crash."""
    sessions = tmp_path / "sessions"
    assert ftw("new", "flags", "--data", "builtin:rotten-tomatoes", sessions=sessions, timeout=60).returncode == 0
    assert ftw("set", "flags", "train.group_by_length=false", sessions=sessions, timeout=60).returncode == 0
    result = ftw("set", "flags", "train.max_steps=5", sessions=sessions, timeout=60)
    assert result.returncode == 0, result.stderr
    written = (sessions / "flags.toml").read_text()
    assert "group_by_length = false" in written and "max_steps = 5" in written


def test_new_writes_a_file_that_names_what_it_trains_and_only_that(workspace):
    _, sessions, data, model = workspace
    text = (sessions / "ok.toml").read_text()
    from engine.core import session as session_format
    import tomllib

    written = tomllib.loads(text)
    assert written["model"] == {"source": session_format.load(sessions / "ok.toml").model.source}
    assert set(written["data"]) == {"source", "text_column", "label_column"} and "train" not in written
    assert text.startswith("# ftw session") and "docs/session.md" in text


def test_a_session_named_with_toml_is_one_session_that_show_finds(workspace):
    """`ftw new x.toml` made x.toml.toml, and `ftw show x.toml` looked for ./x.toml."""
    tmp_path, sessions, data, model = workspace
    made = ftw("new", "x.toml", "--model", str(model), "--data", str(data), sessions=sessions, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (sessions / "x.toml").is_file() and not (sessions / "x.toml.toml").exists()
    for name in ("x.toml", "x"):
        shown = ftw("show", name, sessions=sessions, cwd=tmp_path, timeout=60)
        assert shown.returncode == 0 and f"# {sessions / 'x.toml'}" in shown.stdout, shown.stderr


@pytest.mark.parametrize("command", [("new", "y"), ("list",), ("status",), ("show", "ok")])
def test_a_sessions_dir_that_is_a_file_is_named(workspace, command):
    tmp_path, _, _, _ = workspace
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    before = snapshot(tmp_path)
    for folder in (afile, afile / "sub"):
        result = ftw(*command, "--sessions-dir", str(folder), sessions=tmp_path / "unused", timeout=60)
        assert_clean_failure(result, f"{afile} is a file", "--sessions-dir")
    assert snapshot(tmp_path) == before


def test_a_typed_path_is_stored_as_typed_not_through_its_links(workspace):
    """`data.source=/dev/stdin` was stored (and shown) as ../../../dev/null: the link's target,
    relative to the sessions folder."""
    tmp_path, sessions, data, _ = workspace
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "latest.csv"
    link.symlink_to(data)
    assert ftw("set", "ok", f"data.source={link}", sessions=sessions).returncode == 0
    import tomllib

    assert tomllib.loads((sessions / "ok.toml").read_text())["data"]["source"] == str(link)
    inside = ftw("set", "ok", "data.source=reviews.csv", sessions=sessions, cwd=tmp_path)
    assert inside.returncode == 0, inside.stderr
    assert tomllib.loads((sessions / "ok.toml").read_text())["data"]["source"] == "../reviews.csv"


def test_attach_shows_the_current_progress_not_the_first_one(workspace):
    """`ftw attach` printed the run's first progress line (step 0/96 … ETA 0:00) from the log's
    history; it now prints the newest after the history, and no ETA before one is measured."""
    _, sessions, _, _ = workspace
    from engine.core import protocol

    run = sessions / "ok"
    run.mkdir()
    writer = protocol.EventWriter(run / "events.jsonl")
    writer.emit(protocol.RUN_STARTED, run_id="r", resume=False, pid=1)
    writer.emit(protocol.STATUS, state="training", detail="")
    writer.emit(protocol.PROGRESS, step=0, max_steps=96, epoch=0.0, samples_per_s=0.0, eta_s=0.0)
    writer.emit(protocol.PROGRESS, step=40, max_steps=96, epoch=0.42, samples_per_s=30.0, eta_s=75.0)
    writer.close()
    attached = ftw("attach", "ok", sessions=sessions, timeout=60)  # no worker: history, then "gone"
    assert "step 0/96" not in attached.stdout and "ETA 0:00" not in attached.stdout, attached.stdout
    assert "step 40/96 epoch 0.42  30.0 samples/s  ETA 1:15" in attached.stdout
    writer = protocol.EventWriter(run / "events.jsonl")
    writer.emit(protocol.RUN_STARTED, run_id="r2", resume=False, pid=1)
    writer.emit(protocol.PROGRESS, step=0, max_steps=96, epoch=0.0, samples_per_s=0.0, eta_s=0.0)
    writer.close()
    assert "step 0/96 epoch 0.00  0.0 samples/s  ETA …" in ftw("attach", "ok", sessions=sessions, timeout=60).stdout


@pytest.mark.parametrize("lock", ['[1]', '"x"', '{"pid": "abc"}', '{"pid": [1]}', '{"pid": 1, "ts": "x"}',
                                  '{"pid": 99999999999999999999, "host": "HOST", "ts": 1}'])
def test_a_worker_lock_that_is_no_lock_crashes_nothing_and_blocks_no_start(workspace, lock):
    """A sibling of the wrong-shaped events: worker.lock holding valid JSON of the wrong shape
    crashed status (AttributeError, ValueError); older than a launch takes, it blocked every start."""
    import os
    import socket
    import time

    from engine.core.runs import LAUNCH_GRACE_S

    _, sessions, _, _ = workspace
    path = sessions / "ok" / "worker.lock"
    path.parent.mkdir()
    path.write_text(lock.replace("HOST", socket.gethostname()))
    for command in (("status", "ok"), ("list",), ("show", "ok")):
        result = ftw(*command, sessions=sessions, timeout=60)
        assert result.returncode == 0 and "never run" in result.stdout, (command, result.stderr)
    if path.exists():  # (a well-formed lock of a dead pid is removed as stale at once)
        old = time.time() - 2 * LAUNCH_GRACE_S
        os.utime(path, (old, old))
    assert ftw("status", "ok", sessions=sessions, timeout=60).returncode == 0
    assert not path.exists(), "an old lock that is no lock is removed like a stale one"


def test_a_cache_folder_that_is_a_file_is_named(workspace):
    """A sibling of --sessions-dir FILE: FTW_CACHE_DIR=FILE gave NotADirectoryError (exit 1)."""
    tmp_path, sessions, _, _ = workspace
    afile = tmp_path / "cache.txt"
    afile.write_text("not a folder")
    before = snapshot(tmp_path)
    result = ftw_here("check", "ok", sessions=sessions, env={"FTW_CACHE_DIR": str(afile)})
    assert_clean_failure(result, f"{afile} is a file", "FTW_CACHE_DIR")
    assert snapshot(tmp_path) == before
