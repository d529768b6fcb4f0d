"""The session file: the documented keys load, mistakes are named with their fix, saves are atomic."""

from __future__ import annotations

import pytest

from engine.core import session as sessions
from engine.core.errors import FtwError

CONTRACT = """schema = 1
[model]
source = "builtin:minilm-l6"
[data]
source = "data/train.csv"
text_column = "text"
label_column = "label"
[train]
epochs = 1
batch_size = 16
learning_rate = 5e-5
seed = 0
max_length = 128
"""


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_documented_keys_load_and_relative_paths_resolve_against_the_file(tmp_path):
    session = sessions.load(write(tmp_path, CONTRACT))
    assert session.train.learning_rate == 5e-5 and session.train.epochs == 1.0
    assert session.resolve(session.data.source) == str(tmp_path / "data" / "train.csv")
    assert session.resolve("builtin:minilm-l6") == "builtin:minilm-l6"
    assert session.resolve("bert-base-uncased") == "bert-base-uncased"  # a hub id stays
    assert session.run_dir == tmp_path / "s"


def test_unknown_key_gets_did_you_mean(tmp_path):
    with pytest.raises(FtwError) as err:
        sessions.load(write(tmp_path, CONTRACT.replace("batch_size", "batch_sise")))
    assert "train.batch_sise" in err.value.problem and "did you mean 'batch_size'" in err.value.problem


def test_unknown_section_gets_did_you_mean(tmp_path):
    with pytest.raises(FtwError) as err:
        sessions.load(write(tmp_path, CONTRACT.replace("[train]", "[trian]")))
    assert "did you mean 'train'" in err.value.problem


@pytest.mark.parametrize("line,expected", [
    ("learning_rate = -1.0", "must be a number > 0"),
    ('learning_rate = "fast"', "must be a number"),
    ("batch_size = 0", "from 1 to 4096"),
    ("batch_size = 2.5", "must be an integer"),
    ('scheduler = "steep"', "linear, cosine, constant"),
])
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path, line, expected):
    key = line.split(" = ")[0]
    text = CONTRACT.replace("[train]\n", f"[train]\n{line}\n") if key == "scheduler" else \
        "\n".join(line if l.startswith(key + " ") else l for l in CONTRACT.splitlines())
    with pytest.raises(FtwError) as err:
        sessions.load(write(tmp_path, text))
    assert f"train.{key}" in err.value.problem and expected in err.value.fix


@pytest.mark.parametrize("key,typed,meant", [("train.scheduler", "cosin", "cosine"),
                                              ("train.precision", "bf61", "bf16"),
                                              ("freeze.preset", "head_only", "head-only"),
                                              ("train.metric_for_best", "macro-f1", "macro_f1")])
def test_a_typo_in_a_choice_gets_did_you_mean(tmp_path, key, typed, meant):
    with pytest.raises(FtwError) as err:
        sessions.load(write(tmp_path, CONTRACT)).with_value(key, typed)
    assert f"{key} = '{typed}'" in err.value.problem and f"did you mean '{meant}'?" in err.value.problem
    assert "one of" in err.value.fix


@pytest.mark.parametrize("line, example", [('space = "train.seed = 1|2"', "train.learning_rate = 1e-5..1e-3 log"),
                                           ('target_modules = "query"', '["query", "value"]')])
def test_a_list_setting_given_one_string_shows_its_own_form(tmp_path, line, example):
    """study.space's fix showed a freeze list (["embeddings", "block.0"]), nothing a space takes."""
    section = "study" if line.startswith("space") else "adapter"
    with pytest.raises(FtwError) as err:
        sessions.load(write(tmp_path, CONTRACT + f"\n[{section}]\n{line}\n"))
    assert example in err.value.fix and "embeddings" not in err.value.fix


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(FtwError, match="not valid TOML"):
        sessions.load(write(tmp_path, "schema = 1\n[model\n"))
    with pytest.raises(FtwError, match="does not exist"):
        sessions.load(tmp_path / "nope.toml")


def test_save_round_trips_and_leaves_no_temp_files(tmp_path):
    session = sessions.load(write(tmp_path, CONTRACT)).with_value("train.epochs", 3)
    sessions.save(session)
    again = sessions.load(session.path)
    assert again.to_dict() == session.to_dict() and again.train.epochs == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]


def test_a_saved_session_keeps_its_mode_and_a_new_one_gets_the_usual_mode(tmp_path):
    """Atomic saves go through a private temp file (0600); the session must stay readable as it was."""
    path = write(tmp_path, CONTRACT)
    path.chmod(0o640)
    sessions.save(sessions.load(path).with_value("train.epochs", 2))
    assert path.stat().st_mode & 0o777 == 0o640
    created = sessions.create("fresh", tmp_path)
    probe = tmp_path / "probe"
    probe.touch()  # what a plain open() gives a new file under this umask
    assert created.path.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777


def test_failed_change_writes_nothing(tmp_path):
    path = write(tmp_path, CONTRACT)
    before = path.read_bytes()
    session = sessions.load(path)
    with pytest.raises(FtwError):
        session.with_value("train.batch_size", -4)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", ".hidden", "x" * 65])
def test_session_names_cannot_escape_the_sessions_folder(tmp_path, name):
    with pytest.raises(FtwError, match="not a valid session name"):
        sessions.create(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_to_overwrite(tmp_path):
    sessions.create("a", tmp_path, **{"train.epochs": 2.0})
    with pytest.raises(FtwError, match="already exists"):
        sessions.create("a", tmp_path)
    assert sessions.load(tmp_path / "a.toml").train.epochs == 2.0


def test_parse_value_converts_typed_text():
    assert sessions.parse_value("train.epochs", "2.5") == 2.5
    assert sessions.parse_value("train.group_by_length", "off") is False
    assert sessions.parse_value("freeze.frozen", "embeddings, block.0") == ["embeddings", "block.0"]
    with pytest.raises(FtwError, match="not an integer"):
        sessions.parse_value("train.batch_size", "many")


def test_lists_and_tables_typed_as_the_session_file_writes_them():
    """`ftw set NAME eval.slices=["topic"]` took the brackets and quotes as part of one name and
    saved it; the file's own TOML form is read as such, and a broken one is refused."""
    assert sessions.parse_value("eval.slices", '["topic", "@length"]') == ["topic", "@length"]
    assert sessions.parse_value("adapter.target_modules", "[]") == []
    assert sessions.parse_value("adapter.ranks", '{ "block.4" = 16 }') == {"block.4": 16}
    for key, text, problem in [("eval.slices", '["topic"', "is not a TOML list"),
                               ("adapter.target_modules", "[1, 2]", "does not give words"),
                               ("adapter.ranks", '{ "block.4" = "big" }', "does not give NAME = RANK")]:
        with pytest.raises(FtwError, match=problem) as refused:
            sessions.parse_value(key, text)
        assert key in refused.value.fix


def test_shipped_example_sessions_are_valid():
    from tests.conftest import ROOT

    shipped = sorted((ROOT / "sessions").glob("*.toml"))
    assert {p.stem for p in shipped} >= {"minilm-rotten", "smollm2-frozen", "smollm2-lora"}
    for path in shipped:
        sessions.load(path)


# ---------------------------------------------------------------- hostile files

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SHIPPED = sorted(__import__("tests.conftest", fromlist=["ROOT"]).ROOT.joinpath("sessions").glob("*.toml"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shipped=st.sampled_from(_SHIPPED), cut=st.floats(0, 1))
def test_a_truncated_session_trains_what_the_whole_one_names_or_is_refused(tmp_path, shipped, cut):
    """A half-written file never falls back to the packaged defaults for what it trains."""
    text = shipped.read_bytes()
    whole = sessions.load(shipped)
    path = tmp_path / "cut.toml"
    path.write_bytes(text[: int(len(text) * cut)])
    try:
        loaded = sessions.load(path)
    except FtwError:
        return
    assert (loaded.model.source, loaded.data.source) == (whole.model.source, whole.data.source)


_key = st.sampled_from(sessions.all_keys() + ["train.epoch", "model.nope", "extra.key"])
_value = st.recursive(st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_key, _value, max_size=8), st.booleans())
def test_any_toml_session_loads_or_is_refused_with_one_message(tmp_path, values, as_table_of_scalars):
    import tomlkit

    document: dict = {}
    for key, value in values.items():
        section, name = key.split(".")
        document.setdefault(section, {})[name] = value
    if as_table_of_scalars and document:
        document[next(iter(document))] = 3  # a section that is no table
    path = tmp_path / "any.toml"
    path.write_text(tomlkit.dumps(document))
    try:
        sessions.load(path)
    except FtwError as err:
        assert err.problem and err.fix


ADAPTER = CONTRACT + """[adapter]
method = "lora"
blocks = "top-k"
ranks = { "block.5" = 16 }
train_fully = ["embeddings"]
"""


def test_adapter_section_loads_and_its_rank_table_stays_inline_on_save(tmp_path):
    path = write(tmp_path, "# mine\n" + ADAPTER)
    session = sessions.load(path)
    assert session.adapter.method == "lora" and session.adapter.ranks == {"block.5": 16}
    sessions.save(session.with_value("adapter.ranks", {"block.5": 32, "block.4": 8}))
    text = path.read_text()
    assert "# mine" in text and 'ranks = {"block.5" = 32, "block.4" = 8}' in text
    assert sessions.load(path).adapter.ranks == {"block.5": 32, "block.4": 8}
    assert sessions.parse_value("adapter.ranks", "block.4=16, block.5=32") == {"block.4": 16, "block.5": 32}


@pytest.mark.parametrize("line, expected", [
    ('ranks = { "block.5" = 0 }', "block.5 = 0 is not a rank"),
    ('ranks = { "block.5" = "big" }', "is not a rank"),
    ("ranks = 4", "is not a table of group names and ranks"),
    ('method = "lore"', "did you mean 'lora'"),
])
def test_bad_adapter_values_are_named(tmp_path, line, expected):
    with pytest.raises(FtwError) as caught:
        sessions.load(write(tmp_path, CONTRACT + "[adapter]\n" + line + "\n"))
    assert expected in caught.value.problem


def test_an_adapter_with_freezing_is_refused_with_train_fully_named(tmp_path):
    with pytest.raises(FtwError) as caught:
        sessions.load(write(tmp_path, ADAPTER + '[freeze]\npreset = "top-k"\n'))
    assert "groups without one are frozen" in caught.value.problem
    assert "adapter.train_fully" in caught.value.fix and 'freeze.preset = "none"' in caught.value.fix


def test_every_adapter_key_breaks_resume_and_an_older_checkpoint_means_no_adapter():
    from engine.core import checkpoints

    keys = [key for key in sessions.all_keys() if key.startswith("adapter.")]
    assert keys and all(key in sessions.BREAKS_RESUME for key in keys)
    before = {key: value for key, value in checkpoints.flat_settings(sessions.Session(path=None).to_dict()).items()
              if not key.startswith("adapter.")}
    now = checkpoints.flat_settings(sessions.Session(path=None).to_dict())
    assert checkpoints.differences(before, now) == ([], [])
    now["adapter.method"] = "lora"
    assert checkpoints.differences(before, now)[0] == ["adapter.method: 'none' -> 'lora'"]
