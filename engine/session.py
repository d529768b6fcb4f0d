"""The session file: one TOML document per session, hand-editable, validated on load.

This module is the single home of the session format. It is stdlib + tomlkit only (pure
Python), so the TUI can read and write sessions without loading torch. Writes go through tomlkit:
a hand-edited file keeps its comments, its order and only the keys someone set.

Layout on disk (the "sessions folder", ./sessions by default):
    <name>.toml      the settings (this module)
    <name>/          the run folder: events.jsonl, commands.jsonl, worker.log, checkpoints/, results
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import tomlkit

from engine.durable import fsync_dir, plain_file_mode
from engine.errors import FtwError
from engine.locations import looks_like_path

SCHEMA = 1
SESSIONS_ENV = "FTW_SESSIONS_DIR"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

FREEZE_PRESETS = ("none", "head-only", "top-k", "all-but-embeddings", "custom")
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STRATEGIES = ("epoch", "steps", "no")
METRICS = ("macro_f1", "accuracy", "weighted_f1", "loss")


@dataclass
class ModelSettings:
    source: str = "builtin:minilm-l6"
    trust_remote_code: bool = False
    help = {
        "source": "builtin name (builtin:minilm-l6), a local Hugging Face folder, or a hub id",
        "trust_remote_code": "run code shipped with the model (only for sources you trust)",
    }


@dataclass
class DataSettings:
    source: str = "builtin:rotten-tomatoes"
    text_column: str = "text"
    text_pair_column: str = ""
    label_column: str = "label"
    validation_source: str = ""
    test_source: str = ""
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int = 0
    help = {
        "source": "builtin name, or a csv/tsv/json/jsonl/parquet file or datasets folder",
        "text_column": "column holding the text to classify",
        "text_pair_column": "optional second text column (sentence pairs); empty for none",
        "label_column": "column holding the label (strings or integers)",
        "validation_source": "separate validation file; empty to split it off the source",
        "test_source": "separate test file; empty to split it off the source",
        "validation_fraction": "share of rows held out for validation when splitting",
        "test_fraction": "share of rows held out for the test when splitting",
        "max_rows": "use only this many rows (stratified sample); 0 for all",
    }


@dataclass
class FreezeSettings:
    preset: str = "none"
    top_k: int = 2
    frozen: list[str] = field(default_factory=list)
    help = {
        "preset": "none, head-only, top-k (train the top k blocks), all-but-embeddings, custom",
        "top_k": "with preset top-k: how many top blocks stay trainable",
        "frozen": "with preset custom: the parameter groups to freeze (embeddings, block.0, …)",
    }


@dataclass
class TrainSettings:
    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    seed: int = 0
    max_length: int = 128
    precision: str = "auto"
    group_by_length: bool = True
    top_block_one_token: bool = True
    eval_strategy: str = "epoch"
    eval_steps: int = 100
    save_strategy: str = "epoch"
    save_steps: int = 100
    keep_checkpoints: int = 2
    early_stopping_patience: int = 0
    metric_for_best: str = "macro_f1"
    logging_steps: int = 10
    threads: int = 0
    devices: int = 1
    prefix_cache: bool = False
    prefix_cache_mb: int = 1024
    help = {
        "epochs": "passes over the training split (fractions allowed)",
        "max_steps": "stop after this many optimizer steps; 0 to use epochs",
        "batch_size": "examples per device per step",
        "eval_batch_size": "examples per step when evaluating",
        "gradient_accumulation": "steps to accumulate before each optimizer update",
        "learning_rate": "peak learning rate of AdamW",
        "weight_decay": "AdamW weight decay",
        "warmup_ratio": "share of steps spent warming the learning rate up",
        "scheduler": "learning-rate schedule: linear, cosine or constant",
        "seed": "random seed for splits, initialisation, dropout and data order",
        "max_length": "tokens per example; longer texts are truncated",
        "precision": "auto (bf16 where the hardware is fast at it), fp32, bf16 or fp16 (GPU)",
        "group_by_length": "batch examples of similar length together (less padding, faster)",
        "top_block_one_token": "the top block computes only the token the classification head reads (exact; faster)",
        "eval_strategy": "when to evaluate: epoch, steps (every eval_steps) or no",
        "eval_steps": "with eval_strategy steps: evaluate every this many steps",
        "save_strategy": "when to checkpoint: epoch, steps (every save_steps) or no",
        "save_steps": "with save_strategy steps: checkpoint every this many steps",
        "keep_checkpoints": "how many of the newest complete checkpoints to keep (at least 1); the best one "
                            "(by metric_for_best) is kept as well when it is older, so there can be one more",
        "early_stopping_patience": "stop after this many evaluations without improvement; 0 off",
        "metric_for_best": "metric that picks the best checkpoint: macro_f1, accuracy, weighted_f1, loss",
        "logging_steps": "report train loss every this many steps",
        "threads": "CPU threads for torch; 0 for torch's default (recorded for exact resume)",
        "devices": "processes to train with (GPUs, or CPU processes); >1 launches torchrun",
        "prefix_cache": "with embeddings + bottom blocks frozen: run them once (eval mode) and reuse their output",
        "prefix_cache_mb": "memory for the prefix cache, in MB; beyond it, entries spill to a file in the run folder",
    }


SECTIONS: dict[str, type] = {
    "model": ModelSettings,
    "data": DataSettings,
    "freeze": FreezeSettings,
    "train": TrainSettings,
}

# Settings that take one of a few words (a typo gets a "did you mean").
CHOICES: dict[str, tuple[str, ...]] = {
    "train.scheduler": SCHEDULERS, "train.precision": PRECISIONS, "train.eval_strategy": STRATEGIES,
    "train.save_strategy": STRATEGIES, "train.metric_for_best": METRICS, "freeze.preset": FREEZE_PRESETS,
}

# Range and choice rules: key -> (check, what is allowed).
RULES: dict[str, tuple[Any, str]] = {
    "train.epochs": (lambda v: v > 0, "a number > 0"),
    "train.max_steps": (lambda v: v >= 0, "an integer >= 0"),
    "train.batch_size": (lambda v: 1 <= v <= 4096, "an integer from 1 to 4096"),
    "train.eval_batch_size": (lambda v: 1 <= v <= 4096, "an integer from 1 to 4096"),
    "train.gradient_accumulation": (lambda v: 1 <= v <= 1024, "an integer from 1 to 1024"),
    "train.learning_rate": (lambda v: 0 < v <= 1, "a number > 0 and <= 1, e.g. 5e-5"),
    "train.weight_decay": (lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "train.warmup_ratio": (lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
    "train.scheduler": (lambda v: v in SCHEDULERS, "one of " + ", ".join(SCHEDULERS)),
    "train.seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32-1"),
    "train.max_length": (lambda v: 8 <= v <= 8192, "an integer from 8 to 8192"),
    "train.precision": (lambda v: v in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
    "train.eval_strategy": (lambda v: v in STRATEGIES, "one of " + ", ".join(STRATEGIES)),
    "train.eval_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.save_strategy": (lambda v: v in STRATEGIES, "one of " + ", ".join(STRATEGIES)),
    "train.save_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.keep_checkpoints": (lambda v: 1 <= v <= 100, "an integer from 1 to 100"),
    "train.early_stopping_patience": (lambda v: v >= 0, "an integer >= 0"),
    "train.metric_for_best": (lambda v: v in METRICS, "one of " + ", ".join(METRICS)),
    "train.logging_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.threads": (lambda v: 0 <= v <= 1024, "an integer from 0 to 1024"),
    "train.devices": (lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
    "train.prefix_cache_mb": (lambda v: 0 <= v <= 1048576, "an integer from 0 to 1048576 (0: all on disk)"),
    "data.validation_fraction": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "data.test_fraction": (lambda v: 0 <= v < 1, "a number from 0 up to 1"),
    "data.max_rows": (lambda v: v >= 0, "an integer >= 0 (0 for all rows)"),
    "freeze.preset": (lambda v: v in FREEZE_PRESETS, "one of " + ", ".join(FREEZE_PRESETS)),
    "freeze.top_k": (lambda v: v >= 0, "an integer >= 0"),
    "model.source": (lambda v: bool(v.strip()), "a builtin name, folder or hub id"),
    "data.source": (lambda v: bool(v.strip()), "a builtin name, file or folder"),
    "data.text_column": (lambda v: bool(v.strip()), "a column name"),
    "data.label_column": (lambda v: bool(v.strip()), "a column name"),
}


@dataclass
class Session:
    """A session's settings plus where it lives. `path` is the TOML file."""

    path: Path
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    freeze: FreezeSettings = field(default_factory=FreezeSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def run_dir(self) -> Path:
        """The run folder beside the TOML file; everything a run writes goes here."""
        return self.path.parent / self.name

    def resolve(self, source: str) -> str:
        """A data/model source as given, or a relative path made absolute against the TOML's folder."""
        if not source or source.startswith("builtin:"):
            return source
        candidate = Path(source).expanduser()
        if not candidate.is_absolute():
            candidate = self.path.parent / candidate
        if candidate.exists() or looks_like_path(source):
            return str(candidate.resolve())
        return source  # a hub id such as "bert-base-uncased"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA}
        for section in SECTIONS:
            out[section] = dataclasses.asdict(getattr(self, section))
        return out

    def get(self, key: str) -> Any:
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)

    def with_value(self, key: str, raw: Any) -> "Session":
        """A copy with one `section.name` key set; the value is type-checked and range-checked."""
        data = self.to_dict()
        section, name = _split_key(key)
        data[section][name] = raw
        return from_dict(data, self.path)


def _split_key(key: str) -> tuple[str, str]:
    if "." not in key:
        raise FtwError(f"'{key}' is not a setting key", "write it as section.name, e.g. train.epochs")
    section, name = key.split(".", 1)
    if section not in SECTIONS:
        raise FtwError(f"unknown section [{section}]{_hint(section, SECTIONS)}",
                       "sections are: " + ", ".join(SECTIONS))
    known = [f.name for f in fields(SECTIONS[section])]
    if name not in known:
        raise FtwError(f"unknown setting {key}{_hint(name, known)}",
                       f"settings of [{section}] are: " + ", ".join(known))
    return section, name


def _hint(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check a TOML value against the type of its default; ints are accepted for floats."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FtwError(f"{key} = {value!r} is not a list of names",
                           f'write it as {key.split(".")[1]} = ["embeddings", "block.0"]')
        return value
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a quoted string"}[expected]
        raise FtwError(f"{key} = {value!r} has the wrong type", f"{key} must be {kind}")
    if expected is float and not math.isfinite(value):
        raise FtwError(f"{key} = {value!r} is not a finite number", f"{key} must be {RULES.get(key, (0, 'a finite number'))[1]}")
    rule = RULES.get(key)
    if rule and not rule[0](value):
        if key in CHOICES:
            raise FtwError(f"{key} = {value!r} is not one of its choices{_hint(value, CHOICES[key])}",
                           f"{key} must be {rule[1]}")
        raise FtwError(f"{key} = {value!r} is out of range", f"{key} must be {rule[1]}")
    return value


def from_dict(data: dict[str, Any], path: Path) -> Session:
    data = dict(data)
    schema = data.pop("schema", SCHEMA)
    if schema != SCHEMA:
        raise FtwError(f"{path.name}: schema = {schema!r} is not supported",
                       f"this version of ftw reads schema = {SCHEMA}")
    session = Session(path=path)
    for section, values in data.items():
        if section not in SECTIONS:
            raise FtwError(f"{path.name}: unknown section [{section}]{_hint(section, SECTIONS)}",
                           "sections are: schema, " + ", ".join(SECTIONS))
        if not isinstance(values, dict):
            raise FtwError(f"{path.name}: '{section}' must be a table", f"write it as [{section}]")
        target = getattr(session, section)
        for name, value in values.items():
            try:
                _split_key(f"{section}.{name}")
            except FtwError as err:
                raise FtwError(f"{path.name}: {err.problem}", err.fix) from None
            default = getattr(target, name)
            setattr(target, name, _coerce(f"{section}.{name}", value, default))
    _check_combinations(session)
    return session


def _check_combinations(session: Session) -> None:
    d = session.data
    if not d.test_source and not d.validation_source and d.validation_fraction + d.test_fraction >= 0.9:
        raise FtwError(
            f"data.validation_fraction + data.test_fraction = {d.validation_fraction + d.test_fraction:g}"
            " leaves almost nothing to train on",
            "keep their sum below 0.9 (e.g. 0.1 each)")


# What a session file must say itself: a default here would train on something nobody chose
# (an empty or half-written file would silently train the packaged model on the packaged data).
REQUIRED_KEYS = ("model.source", "data.source")


def _require_what_it_trains(data: dict[str, Any], path: Path) -> None:
    missing = [key for key in REQUIRED_KEYS
               if not isinstance(data.get(key.split(".")[0]), dict) or key.split(".")[1] not in data[key.split(".")[0]]]
    if not missing:
        return
    what = "is empty" if not data else "does not say what to train: no " + " and no ".join(missing)
    lines = "; ".join(f'[{key.split(".")[0]}] {key.split(".")[1]} = "…"' for key in missing)
    raise FtwError(f"{path.name} {what} (a truncated or unfinished file?)",
                   f"add {lines} to it (e.g. `ftw set {path.stem} data.source=FILE`), "
                   f"or create a new session with `ftw new NAME --model … --data …`")


def load(path: Path) -> Session:
    """Read and validate a session file. Every problem is an FtwError naming the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FtwError(f"session file {path} does not exist",
                       "create it with `ftw new NAME`, or check the name with `ftw list`")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise FtwError(f"{path} is not UTF-8 text", "save the session file as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise FtwError(f"{path} is not valid TOML: {err}",
                       "fix the line it names (strings need quotes; sections look like [train])") from None
    session = from_dict(data, path.resolve())  # a wrong value is named first: the line the user wrote
    _require_what_it_trains(data, path)
    return session


# A new file says what it trains and how to read its data; every other key is written once set.
NEW_FILE_KEYS = REQUIRED_KEYS + ("data.text_column", "data.label_column")
NEW_FILE_HEADER = ("ftw session. Every setting, its default and meaning: docs/session.md.",
                   "Change one with `ftw set NAME section.key=value`, or here (comments are kept).")


def to_toml(session: Session, touched=(), template: Path | None = None) -> str:
    """The session as TOML text, edited into the file it comes from (or `template`) with tomlkit:
    its comments, order and layout stay; a key the file has is updated in place; a key it lacks
    is added only when it differs from the default or is in `touched` (set by the user, even to
    its default), and a new file gets NEW_FILE_KEYS. Keys are never removed: one written stays
    written, also when set back to its default (the user chose it)."""
    document = _document(template or session.path)
    always = NEW_FILE_KEYS if "model" not in document else ()  # a new file names what it trains
    defaults = Session(path=session.path)
    for key in all_keys():
        section, name = key.split(".")
        value = session.get(key)
        table = document.get(section)
        if table is not None and name in table:
            if table[name].unwrap() != value:  # 1 and 1.0 are the same epochs: left as typed
                table[name] = value
        elif key in touched or value != defaults.get(key) or key in always:
            if table is None:
                table = document[section] = tomlkit.table()
            table[name] = value
    return tomlkit.dumps(document)


def _document(path: Path) -> tomlkit.TOMLDocument:
    """The file as tomlkit reads it (comments and all), or a new one with its header."""
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.TOMLKitError):
        document = tomlkit.document()
        for line in NEW_FILE_HEADER:
            document.add(tomlkit.comment(line))
        document["schema"] = SCHEMA
        return document


def save(session: Session, touched=(), template: Path | None = None) -> None:
    """Write atomically: a temp file in the same folder, fsync, rename over the old file.
    What is written: see to_toml (comments and layout kept; only the keys set)."""
    session.path.parent.mkdir(parents=True, exist_ok=True)
    payload = to_toml(session, touched, template).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{session.path.name}.", dir=session.path.parent)
    try:
        # mkstemp's file is 0600; the session keeps its own mode, or a new file's usual one
        os.fchmod(fd, session.path.stat().st_mode & 0o777 if session.path.exists() else plain_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, session.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(session.path.parent)



def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name or "") or ".." in name:
        raise FtwError(f"'{name}' is not a valid session name",
                       "use letters, digits, '.', '_' or '-' (no slashes, no '..'; at most 64 characters)")
    return name


def sessions_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get(SESSIONS_ENV) or "sessions").expanduser().resolve()


def session_path(name_or_path: str, folder: Path) -> Path:
    """A session by name in the sessions folder, or by a path to its .toml file."""
    if name_or_path.endswith(".toml"):
        return Path(name_or_path).expanduser().resolve()
    return folder / f"{validate_name(name_or_path)}.toml"


def find(name_or_path: str, folder: Path) -> Session:
    path = session_path(name_or_path, folder)
    if not path.is_file():
        names = [p.stem for p in list_paths(folder)]
        hint = _hint(name_or_path, names)
        raise FtwError(f"no session '{name_or_path}' in {folder}{hint}",
                       "list sessions with `ftw list`, or create one with `ftw new NAME`")
    return load(path)


def list_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.toml") if NAME_PATTERN.match(p.stem))


def create(name: str, folder: Path, check: Callable[[Session], None] | None = None, **overrides: Any) -> Session:
    """A new session file; refuses to overwrite an existing one. overrides: {"model.source": ...}.
    `check(session)` may raise to refuse it before anything is written."""
    path = folder / f"{validate_name(name)}.toml"
    if path.exists():
        raise FtwError(f"session '{name}' already exists at {path}",
                       "pick another name, or edit the existing file")
    session = Session(path=path)
    for key, value in overrides.items():
        session = session.with_value(key, value)
    if check is not None:
        check(session)
    save(session, touched=overrides)
    return session


def parse_value(key: str, text: str) -> Any:
    """Turn a string a user typed (CLI `--set`, a TUI field) into the key's type."""
    section, name = _split_key(key)
    default = getattr(SECTIONS[section](), name)
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise FtwError(f"{key} = {text!r} is not true or false", f"{key} must be true or false")
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    caster = type(default)
    try:
        return caster(text.strip()) if caster is not str else text
    except ValueError:
        kind = "an integer" if caster is int else "a number"
        raise FtwError(f"{key} = {text!r} is not {kind}", f"{key} must be {kind}") from None


def field_help(key: str) -> str:
    section, name = _split_key(key)
    return SECTIONS[section].help.get(name, "")


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]
