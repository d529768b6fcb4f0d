"""Training data: read a source, clean it, split it (stratified, seeded), tokenize it (cached).

    prepare(session)              -> PreparedData: train / validation / (test) datasets + label names
    tokenize(data, tok, n, cache) -> the splits as token ids, cached on disk by content
    token_length_stats(train, n)  -> percentiles and a histogram of token lengths
    preview(session)              -> plain JSON for the TUI (which never imports datasets)
    check_source(session)         -> the sources read and their columns exist (for `ftw new/set`)

Every mistake in the data (a missing file, a wrong column, a malformed line) is one FtwError
naming the problem and the fix; nothing here writes a file except the token cache.
pandas, numpy and datasets are imported inside the functions that use them, so importing this
module (e.g. for a CLI's command table) costs nothing.
"""

from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from engine.core import builtins
from engine.core.errors import FtwError
from engine.core.session import DERIVED_SLICES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from datasets import Dataset

    from engine.core.session import Session

FILE_FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
SUPPORTED = ("csv, tsv, json (an array of objects or JSON lines), jsonl, parquet "
             "(each optionally compressed as .gz, .bz2 or .xz), a folder written by "
             "datasets' save_to_disk, or a builtin ("
             + ", ".join(f"builtin:{name}" for name in builtins.DATASETS) + ")")
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"),
                 "test": ("test",)}
INTEGER = re.compile(r"[+-]?\d+")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
NOT_A_NUMBER = re.compile(r"[+-]?nan", re.IGNORECASE)   # how pandas and numpy write a missing value
# A classifier head, its per-class metrics and a confusion matrix grow with the label count (the
# matrix as its square); a label column with more distinct values than this is nearly always an id
# or free text, and ftw refuses it before any of those are built.
MAX_LABELS = 1000
# A label column where this many labels or more have one training row each (and they are most of
# the labels) holds ids or free text, not classes: nothing can be learnt about a one-row class.
ID_LIKE_LABELS = 20
# A tokenizer holds about 160 bytes per character of its input (a 30 MB row took 5 GB), so text is
# cut to max_length x CHARS_PER_TOKEN characters before it is tokenized, and a call gets at most
# CHARS_PER_CALL characters (about 300 MB). Natural text runs at 2-6 characters a token and
# WordPiece turns a word over 100 characters into one [UNK], so the first max_length tokens (all a
# model sees) come out the same; only a row longer than the cut tokenizes differently.
CHARS_PER_TOKEN = 32
CHARS_PER_CALL = 2_000_000
# Bump when the cleaning, splitting or tokenizing rules change, so old fingerprints and
# token caches stop matching.
FORMAT_VERSION = "ftw-data-1"


@dataclass
class PreparedData:
    splits: dict[str, "Dataset"]     # "train", "validation", maybe "test": text, (text_pair), label id
    labels: list[str]                # label id -> name
    dropped: dict[str, int]          # reason -> rows dropped, e.g. {"empty text": 14}
    fingerprint: str                 # hash of the split contents: same data, same splits, same hash
    columns: list[str]               # the raw source's columns
    pairs: bool = False              # whether the splits carry a text_pair column
    # split -> column -> each row's value: the eval.slices columns, beside the splits (the model
    # never sees them, and they are no part of the fingerprint)
    slice_columns: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def rows(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def label_counts(self) -> dict[str, dict[str, int]]:
        """split -> label name -> rows, every label listed (0 where a split has none)."""
        result = {}
        for name, split in self.splits.items():
            counts = Counter(split["label"])
            result[name] = {label: counts.get(index, 0) for index, label in enumerate(self.labels)}
        return result


@dataclass
class _Source:
    """One read source: its frames by split name (a single file gives just "train")."""
    name: str                        # as the user wrote it, for messages
    key: str                         # the setting it came from, e.g. data.validation_source
    frames: dict[str, pd.DataFrame]
    builtin: builtins.Builtin | None = None

    @property
    def columns(self) -> list[str]:
        return [str(column) for column in next(iter(self.frames.values())).columns]


@dataclass(frozen=True)
class _Columns:
    text: str
    pair: str        # "" for none
    label: str
    slices: tuple[str, ...] = ()   # eval.slices that name columns (kept as SLICE_PREFIX + name)


SLICE_PREFIX = "\x00slice:"   # no column of a file is called this: the slice columns' names in a frame


# --------------------------------------------------------------------------- prepare

def prepare(session: "Session") -> PreparedData:
    """Read, clean and split the session's data. Raises FtwError for anything wrong with it."""
    settings = session.data
    main = _load_source(session, settings.source, "data.source")
    columns = _columns_for(session, main)
    main_columns = _slices_of(main, columns, needed=not settings.test_source)
    _require_columns(main, main_columns)
    dropped: Counter = Counter()   # reason -> rows, summed over every source
    frames = {split: _clean(frame, main_columns, main, dropped) for split, frame in main.frames.items()}
    for split in ("validation", "test"):
        source_text = getattr(settings, f"{split}_source")
        if source_text:
            extra = _load_source(session, source_text, f"data.{split}_source", wanted_split=split)
            extra_columns = _slices_of(extra, columns, needed=split == "test")
            _require_columns(extra, extra_columns)
            frames[split] = _clean(extra.frames["train"], extra_columns, extra, dropped)
    _require_consistent_labels(frames["train"], columns)   # other splits: _require_known_labels
    _require_sane_label_count(frames["train"], columns)
    _require_two_labels(frames["train"], main, columns)
    frames = _split(frames, settings, session.train.seed)
    labels = _ordered_labels(frames["train"]["label"])
    _require_known_labels(frames, labels)
    slice_columns = {split: {name: frame[SLICE_PREFIX + name].tolist() for name in columns.slices
                             if SLICE_PREFIX + name in frame} for split, frame in frames.items()}
    frames = {split: frame.drop(columns=[column for column in frame.columns if column.startswith(SLICE_PREFIX)])
              for split, frame in frames.items()}
    return PreparedData(
        splits={name: _to_dataset(frame, labels) for name, frame in frames.items()},
        labels=labels,
        dropped=dict(dropped),
        fingerprint=_fingerprint(frames, labels),
        columns=main.columns,
        pairs=bool(columns.pair),
        slice_columns=slice_columns,
    )


def _split(frames: dict[str, pd.DataFrame], settings, seed: int) -> dict[str, pd.DataFrame]:
    """Sample max_rows, then hold out whichever of test / validation no file provided."""
    import numpy as np
    train = frames["train"]
    if settings.max_rows and settings.max_rows < len(train):
        train = _sample(train, settings.max_rows, np.random.default_rng([seed, 0]))
    base = len(train)   # fractions are shares of the source, not of what is left
    result = {}
    wants_test = "test" not in frames and settings.test_fraction > 0
    if wants_test:
        train, result["test"] = _hold_out(
            train, _round_half_up(settings.test_fraction * base), "test", settings,
            np.random.default_rng([seed, 1]), base, "in the data")
    if "validation" not in frames:
        pool = "left after holding out the test split" if wants_test else "in the data"
        train, result["validation"] = _hold_out(
            train, _round_half_up(settings.validation_fraction * base), "validation", settings,
            np.random.default_rng([seed, 2]), base, pool)
    if settings.train_fraction < 1:  # a learning curve's point: a share of what is left to train on
        keep = max(_round_half_up(settings.train_fraction * len(train)), 1)
        train = _sample(train, keep, np.random.default_rng([seed, 3]))
    ordered = {"train": train}
    for name in ("validation", "test"):
        if name in frames or name in result:
            ordered[name] = frames.get(name, result.get(name))
    return ordered


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


# --------------------------------------------------------------------------- reading

def _load_source(session: "Session", source: str, key: str, wanted_split: str = "train") -> _Source:
    if builtins.is_builtin(source):
        return _load_builtin(source, key)
    resolved = session.resolve(source)
    path = Path(resolved)
    if not path.exists():
        raise _missing(source, resolved, key, session)
    if path.is_dir():
        frames = _read_datasets_folder(path, source, key)
        if wanted_split != "train":
            frames = {"train": _pick_split(frames, wanted_split, source, key)}
        return _Source(source, key, frames)
    return _Source(source, key, {"train": _read_file(path, source, key)})


def _missing(source: str, resolved: str, key: str, session: "Session") -> FtwError:
    if resolved == source and not Path(source).is_absolute():
        # Session.resolve leaves strings that look like hub ids alone.
        return FtwError(
            f"{key} = '{source}' is not a file, a folder or a builtin dataset",
            f"give a local file or folder (relative paths start at {session.path.parent}); "
            "no dataset hub is reachable here; or use a builtin: "
            + ", ".join(f"builtin:{name}" for name in builtins.DATASETS))
    return FtwError(f"{key}: {resolved} does not exist",
                    f"check the path; relative paths start at the session file's folder "
                    f"({session.path.parent})")


def _load_builtin(source: str, key: str) -> _Source:
    builtin = builtins.dataset(source)
    frame = _read_file(builtins.locate(builtin), source, key)
    if builtin.drop_labels:
        # Part of the builtin's definition (e.g. 'plot' rows are not reviews), not lost data.
        frame = frame[~frame[builtin.label_column].isin(builtin.drop_labels)].reset_index(drop=True)
    return _Source(source, key, {"train": frame}, builtin)


def _format_of(path: Path) -> tuple[str, Any]:
    """(".csv", opener) for data.csv.bz2; opener is None for uncompressed files."""
    suffixes = [s.lower() for s in path.suffixes]
    opener = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if opener:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), opener


def _read_file(path: Path, name: str, key: str) -> pd.DataFrame:
    kind, opener = _format_of(path)
    if kind not in FILE_FORMATS:
        raise FtwError(f"{key}: {name} is not a supported data format ('{kind or path.name}')",
                       f"use one of: {SUPPORTED}")
    try:
        if kind in (".csv", ".tsv"):
            return _read_delimited(path, name, kind, opener)
        if kind == ".parquet":
            return _read_parquet(path, name, opener)
        return _read_json(_read_bytes(path, opener), name, lines=(kind == ".jsonl"))
    except PermissionError:
        raise FtwError(f"{key}: cannot read {path}: permission denied",
                       "make the file readable (chmod u+r), or copy it somewhere you can read") from None
    except (EOFError, OSError, lzma.LZMAError) as err:
        raise FtwError(f"{key}: cannot read {path}: {err}",
                       "check the file is complete and its compression matches its name") from None


def _read_bytes(path: Path, opener) -> bytes:
    with (opener or open)(path, "rb") as handle:
        return handle.read()


def _require_unique_column_names(path: Path, name: str, options: dict) -> None:
    """pandas renames a repeated header name (label, label.1), so a setting naming it would pick
    one of the columns without a word: refuse the file instead."""
    import pandas as pd

    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                         encoding="utf-8", **options).iloc[0].tolist()
    repeated = sorted({column for column in header if column.strip() and header.count(column) > 1})
    if repeated:
        raise FtwError(f"{name} names the column{'s' if len(repeated) > 1 else ''} "
                       f"{', '.join(repr(c) for c in repeated)} more than once (header: {', '.join(header)})",
                       "rename the columns in the header line so each name is used once")


def _read_delimited(path: Path, name: str, kind: str, opener) -> pd.DataFrame:
    import pandas as pd
    # TSV files in the wild (GLUE and friends) carry bare quotes inside text, so quotes are
    # taken literally there; CSV follows the usual quoting rules.
    options = {"sep": "\t", "quoting": csv.QUOTE_NONE} if kind == ".tsv" else {"sep": ","}
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8",
                            on_bad_lines="error", **options)
    except UnicodeDecodeError:
        raise _not_utf8(name, _first_non_utf8_line(path, opener)) from None
    except pd.errors.EmptyDataError:
        raise _empty(name, "the file is empty") from None
    except pd.errors.ParserError as err:
        raise _malformed_delimited(name, str(err), kind) from None
    _require_unique_column_names(path, name, options)
    frame.columns = [str(column) for column in frame.columns]
    return frame


def _malformed_delimited(name: str, message: str, kind: str) -> FtwError:
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if fields:
        expected, line, saw = fields.groups()
        separator = "tab" if kind == ".tsv" else "comma"
        return FtwError(
            f"{name} is malformed: line {line} has {saw} fields but the header has {expected}",
            f"fix line {line}: quote text that contains a {separator} (\"like, this\") "
            "or remove the extra separators")
    quote = re.search(r"EOF inside string starting at row (\d+)", message)
    if quote:
        line = int(quote.group(1)) + 1   # pandas counts rows from 0, editors count lines from 1
        return FtwError(f"{name} is malformed: the quote opened on line {line} is never closed",
                        f"fix line {line}: close the quote, or write a quote inside text as two (\"\")")
    return FtwError(f"{name} is malformed: {message.strip()}",
                    "fix the line it names, or re-export the file as plain CSV with a header line")


def _first_non_utf8_line(path: Path, opener) -> int | None:
    with (opener or open)(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _not_utf8(name: str, line: int | None) -> FtwError:
    where = f" (first on line {line})" if line else ""
    return FtwError(f"{name} is not UTF-8 text{where}",
                    "re-save it as UTF-8 (e.g. in a spreadsheet: Save As > CSV UTF-8; or "
                    f"`iconv -f latin1 -t utf-8 {Path(name).name} > fixed{_suffix_of(name)}`)")


def _suffix_of(name: str) -> str:
    return "".join(Path(name).suffixes) or ".csv"


def _empty(name: str, why: str) -> FtwError:
    return FtwError(f"{name} has no data rows ({why})",
                    "check the file: it needs a header line (or named fields) and rows below it")


def _read_json(raw: bytes, name: str, lines: bool) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(name, raw[:err.start].count(b"\n") + 1) from None
    if not text.strip():
        raise _empty(name, "the file is empty")
    if not lines:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":   # "Extra data" after a first object means JSON lines
                raise FtwError(f"{name} is not valid JSON: {err.msg} on line {err.lineno}, column {err.colno}",
                               f"fix line {err.lineno}; the file must be an array of objects "
                               "([{\"text\": …, \"label\": …}, …]) or one object per line") from None
        else:
            return _records_frame(_json_records(document, name), name)
    return _records_frame(_json_lines(text, name), name)


def _json_records(document: Any, name: str) -> list[dict]:
    import pandas as pd
    if isinstance(document, dict):
        if document and all(isinstance(value, list) for value in document.values()):
            lengths = {len(value) for value in document.values()}
            if len(lengths) == 1:   # {"text": [...], "label": [...]}: columns
                return pd.DataFrame(document).to_dict("records")
        return [document]
    if not isinstance(document, list):
        raise FtwError(f"{name} holds a single JSON {_json_kind(document)}, not rows",
                       "write an array of objects, or one object per line (JSON lines)")
    for number, record in enumerate(document, start=1):
        if not isinstance(record, dict):
            raise FtwError(f"{name}: item {number} of the JSON array is a {_json_kind(record)}, not an object",
                           "make every item an object such as {\"text\": \"…\", \"label\": \"…\"}")
    return document


def _json_lines(text: str, name: str) -> list[dict]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise FtwError(f"{name}: line {number} is not valid JSON ({err.msg} at column {err.colno})",
                           f"fix line {number}: each line must be one complete JSON object") from None
        if not isinstance(record, dict):
            raise FtwError(f"{name}: line {number} is a JSON {_json_kind(record)}, not an object",
                           f"fix line {number}: write it as {{\"text\": \"…\", \"label\": \"…\"}}")
        records.append(record)
    return records


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _records_frame(records: list[dict], name: str) -> pd.DataFrame:
    import pandas as pd
    if not records:
        raise _empty(name, "no records")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path, name: str, opener) -> pd.DataFrame:
    import pandas as pd
    try:
        # pyarrow needs random access, so a compressed parquet is read into memory first.
        target = io.BytesIO(_read_bytes(path, opener)) if opener else path
        frame = pd.read_parquet(target)
    except (PermissionError, FileNotFoundError):
        raise
    except Exception as err:   # pyarrow raises ArrowInvalid, OSError and friends
        raise FtwError(f"{name} is not a readable parquet file: {err}",
                       "re-export it (e.g. pandas DataFrame.to_parquet), or rename it if it is another format") from None
    frame.columns = [str(column) for column in frame.columns]
    return frame


def _read_datasets_folder(path: Path, name: str, key: str) -> dict[str, pd.DataFrame]:
    markers = ("dataset_dict.json", "state.json", "dataset_info.json")
    if not any((path / marker).exists() for marker in markers):
        raise FtwError(f"{key}: {name} is a folder but not one written by datasets' save_to_disk",
                       f"point {key} at a data file inside it, or at a save_to_disk folder; supported: {SUPPORTED}")
    from datasets import DatasetDict, load_from_disk
    try:
        loaded = load_from_disk(str(path))
    except Exception as err:   # datasets raises FileNotFoundError / ValueError variants
        raise FtwError(f"{key}: cannot load the datasets folder {name}: {err}",
                       "save it again with Dataset.save_to_disk or DatasetDict.save_to_disk") from None
    if not isinstance(loaded, DatasetDict):
        return {"train": _dataset_frame(loaded)}
    frames = {}
    for split, aliases in SPLIT_ALIASES.items():
        found = next((alias for alias in aliases if alias in loaded), None)
        if found:
            frames[split] = _dataset_frame(loaded[found])
    if "train" not in frames:
        raise FtwError(f"{key}: the datasets folder {name} has no 'train' split (it has: {', '.join(loaded)})",
                       "save the training rows as the 'train' split, or save a single Dataset")
    return frames


def _pick_split(frames: dict[str, pd.DataFrame], wanted: str, name: str, key: str) -> pd.DataFrame:
    if wanted in frames:
        return frames[wanted]
    if len(frames) == 1:
        return next(iter(frames.values()))
    raise FtwError(f"{key}: the datasets folder {name} has several splits ({', '.join(frames)}) but no '{wanted}'",
                   f"save a folder with a '{wanted}' split, or a single Dataset")


def _dataset_frame(dataset) -> pd.DataFrame:
    """A datasets.Dataset as a frame; ClassLabel ids become their names (-1, "no label", becomes empty)."""
    from datasets import ClassLabel
    frame = dataset.to_pandas()
    for column, feature in dataset.features.items():
        if isinstance(feature, ClassLabel):
            names = feature.names
            frame[column] = [names[i] if 0 <= i < len(names) else "" for i in frame[column]]
    return frame


# --------------------------------------------------------------------------- columns and cleaning

def _columns_for(session: "Session", source: _Source) -> _Columns:
    """The session's columns; a builtin's own names stand in for the generic defaults."""
    settings = session.data
    text, label = settings.text_column, settings.label_column
    existing = source.columns
    if source.builtin:
        if text == "text" and text not in existing:
            text = source.builtin.text_column
        if label == "label" and label not in existing:
            label = source.builtin.label_column
    slices = tuple(dict.fromkeys(name for name in session.eval.slices if name not in DERIVED_SLICES))
    return _Columns(text, settings.text_pair_column, label, slices)


def _slices_of(source: _Source, columns: _Columns, needed: bool) -> _Columns:
    """The slice columns a source must have (it gives the test split: all of them) or keeps
    (the others: those it has)."""
    if needed:
        return columns
    return replace(columns, slices=tuple(c for c in columns.slices if c in source.columns))


def _column_problems(source: _Source, columns: _Columns) -> list[FtwError]:
    existing = source.columns
    wanted = [("text_column", columns.text), ("text_pair_column", columns.pair), ("label_column", columns.label)]
    problems = [_missing_column(source, setting, column, existing)
                for setting, column in wanted if column and column not in existing]
    problems += [_missing_slice_column(source, column, existing) for column in columns.slices
                 if column not in existing]
    for setting, column in wanted[:2]:
        if column and column == columns.label and column in existing:
            problems.append(FtwError(
                f"data.label_column and data.{setting} are both '{column}': the model would read each "
                "row's label in its input",
                f"set data.{setting} to the column holding the text (columns: {', '.join(existing)})"))
    return problems


def _require_columns(source: _Source, columns: _Columns) -> None:
    problems = _column_problems(source, columns)
    if problems:
        raise _one_error(problems)


def _one_error(problems: list[FtwError]) -> FtwError:
    """Several problems as one message naming each, with each one's fix."""
    problems = list({problem.message: problem for problem in problems}.values())
    if len(problems) == 1:
        return problems[0]
    return FtwError(f"{len(problems)} problems with the data's columns:\n    "
                    + "\n    ".join(problem.problem for problem in problems),
                    "; ".join(dict.fromkeys(problem.fix for problem in problems)))


def check_source(session: "Session") -> None:
    """What `ftw new` and `ftw set` check when data settings change: every source can be read and
    has the session's columns (all column problems in one FtwError). No cleaning, splitting or
    tokenizing: `ftw check` does the rest."""
    settings = session.data
    main = _load_source(session, settings.source, "data.source")
    columns = _columns_for(session, main)
    problems = _column_problems(main, _slices_of(main, columns, needed=not settings.test_source))
    for split in ("validation", "test"):
        source_text = getattr(settings, f"{split}_source")
        if source_text:
            extra = _load_source(session, source_text, f"data.{split}_source", wanted_split=split)
            problems += _column_problems(extra, _slices_of(extra, columns, needed=split == "test"))
    if problems:
        raise _one_error(problems)


def _missing_column(source: _Source, setting: str, column: str, existing: list[str]) -> FtwError:
    return FtwError(f"{source.name} has no column '{column}' (data.{setting}){_did_you_mean(column, existing)}",
                    f"set data.{setting} to one of its columns: {', '.join(existing)}")


def _missing_slice_column(source: _Source, column: str, existing: list[str]) -> FtwError:
    return FtwError(f"{source.name} has no column '{column}' (eval.slices){_did_you_mean(column, existing)}",
                    f"name columns of the data in eval.slices: {', '.join(existing)}; or derived slices: "
                    + ", ".join(DERIVED_SLICES))


def _did_you_mean(word: str, options: list[str]) -> str:
    by_lower = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


def _clean(frame: pd.DataFrame, columns: _Columns, source: _Source, dropped: Counter) -> pd.DataFrame:
    """text, (text_pair), label as str; rows missing any of them dropped and counted by reason."""
    import pandas as pd
    if frame.empty:
        raise _empty(source.name, "only a header")
    _require_plain_values(frame, columns, source)
    clean = pd.DataFrame({"text": _as_strings(frame[columns.text])})
    if columns.pair:
        clean["text_pair"] = _as_strings(frame[columns.pair])
    clean["label"] = _as_strings(frame[columns.label]).str.strip()
    for column in columns.slices:
        clean[SLICE_PREFIX + column] = _as_strings(frame[column])
    keep = pd.Series(True, index=clean.index)
    here: Counter = Counter()
    for column, reason in (("text", "empty text"), ("text_pair", "empty text pair"), ("label", "empty label")):
        if column in clean:
            empty = keep & (clean[column].str.strip() == "")
            if empty.any():   # a row is counted once, under its first reason
                here[reason] = int(empty.sum())
            keep &= ~empty
    dropped.update(here)
    if not keep.any():
        summary = ", ".join(f"{n} with {reason}" for reason, n in here.items())
        raise FtwError(f"all {len(clean)} rows of {source.name} were dropped ({summary})",
                       f"check that data.text_column = '{columns.text}' and data.label_column = "
                       f"'{columns.label}' name the right columns (columns: {', '.join(source.columns)})")
    return clean[keep].reset_index(drop=True)


def _require_plain_values(frame: pd.DataFrame, columns: _Columns, source: _Source) -> None:
    """Text columns hold text and the label column single values: a JSON object, a list or a
    number column would otherwise be trained on as its Python repr ("{'a': 1}", "[1 2]")."""
    for setting, column in (("text_column", columns.text), ("text_pair_column", columns.pair),
                            ("label_column", columns.label)):
        if not column:
            continue
        values = frame[column]
        nested = _first_nested(values)
        if nested is not None:
            row, value = nested
            what = "text" if setting != "label_column" else "one label per row"
            raise FtwError(
                f"{source.name}: column '{column}' (data.{setting}) holds {_kind_of(value)}, not {what} "
                f"(first in data row {row + 1}: {_clip(repr(value))})",
                f"point data.{setting} at a column of {what}, or flatten '{column}' into plain values first "
                f"(columns: {', '.join(source.columns)})")
        if setting != "label_column" and values.dtype.kind in "biufcmM" and len(values):
            raise FtwError(
                f"{source.name}: column '{column}' (data.{setting}) holds {values.dtype} values, not text "
                f"(e.g. {_clip(repr(values.iloc[0]))})",
                f"set data.{setting} to the column holding the text (columns: {', '.join(source.columns)})")


def _first_nested(values: pd.Series) -> tuple[int, Any] | None:
    """(row position, value) of the first dict, list, array or bytes value; None when all are plain."""
    if values.dtype != object:
        return None
    for position, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)) or (hasattr(value, "__len__") and not isinstance(value, str)):
            return position, value   # dict, list, tuple, numpy array (parquet/arrow lists)
    return None


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "objects (JSON objects / dicts)"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return "lists (JSON arrays / list values)"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _as_strings(column: pd.Series) -> pd.Series:
    """Every value as str: missing -> "", whole floats -> "3" (pandas widens int columns with gaps)."""
    import pandas as pd

    def convert(value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    return column.astype(object).map(convert).astype(object)


# --------------------------------------------------------------------------- labels

def _ordered_labels(names: Iterable[str]) -> list[str]:
    """Sorted so label ids never depend on row order: numerically for integers, else alphabetically."""
    unique = set(names)
    if all(INTEGER.fullmatch(name) for name in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _require_consistent_labels(train: pd.DataFrame, columns: _Columns) -> None:
    """Training labels of one kind, each written one way. Otherwise 1 and 1.0, NaN and nan, or 0/1
    with a stray 'positive' become separate classes, and the split fails later with a message
    about a class that has one row."""
    counts = Counter(train["label"].value_counts().to_dict())
    column = f"data.label_column '{columns.label}'"
    missing = sorted(label for label in counts if NOT_A_NUMBER.fullmatch(label))
    if missing:
        raise FtwError(
            f"{column} has rows labelled " + ", ".join(_rows_of(label, counts) for label in missing)
            + ": that is how a missing value is written, not a class",
            "leave those labels empty (such rows are dropped and counted) or give them their real labels")
    spelled = _same_value_spelled_apart(counts)
    if spelled:
        first = spelled[0]
        raise FtwError(
            f"{column} writes the same value in different ways, which would become separate classes: "
            + "; ".join(" and ".join(_rows_of(label, counts) for label in group) for group in spelled[:5]),
            f"write each label one way in every file (e.g. replace '{first[1]}' with '{first[0]}')")
    numbers = [label for label in counts if NUMBER.fullmatch(label)]
    words = [label for label in counts if not NUMBER.fullmatch(label)]
    if numbers and words:
        word_rows, number_rows = (sum(counts[label] for label in side) for side in (words, numbers))
        fewer, more, odd = ("words", "numbers", words) if word_rows <= number_rows else ("numbers", "words", numbers)
        raise FtwError(
            f"{column} mixes numbers and words: {_kind_summary(numbers, counts, 'number')} and "
            f"{_kind_summary(words, counts, 'word')}; each would become its own class",
            f"make every label one kind: replace the {fewer} ({_quoted(_ordered_labels(odd))}) "
            f"with the matching {more}, or remove those rows")


def _require_sane_label_count(train: pd.DataFrame, columns: _Columns) -> None:
    counts = train["label"].value_counts()
    column = f"data.label_column '{columns.label}'"
    fix = "point data.label_column at the column that holds the classes"
    if len(counts) > MAX_LABELS:
        raise FtwError(
            f"{column} has {len(counts):,} distinct labels in the training data; ftw trains classifiers over "
            f"at most {MAX_LABELS:,} (the head, per-class scores and confusion matrix grow with the label "
            "count, and so many classes are nearly always an id or free-text column)",
            f"{fix}, or group the labels into at most {MAX_LABELS:,} classes")
    single = int((counts == 1).sum())
    if single >= ID_LIKE_LABELS and single * 2 > len(counts):
        raise FtwError(
            f"{column} looks like ids or free text, not classes: {single:,} of its {len(counts):,} labels "
            "have a single training row, and nothing can be learnt about a class from one example",
            f"{fix}, or merge the rare labels into broader ones (each needs a few rows at least)")


def _same_value_spelled_apart(counts: Counter) -> list[list[str]]:
    """Groups of labels that are one number written differently ('1', '1.0', '+1'), most rows first."""
    groups: dict[float, list[str]] = {}
    for label in counts:
        if NUMBER.fullmatch(label):
            groups.setdefault(float(label), []).append(label)
    return [sorted(group, key=lambda label: (-counts[label], label))
            for group in groups.values() if len(group) > 1]


def _rows_of(label: str, counts: Counter) -> str:
    return f"'{label}' ({counts[label]:,} row{'s' if counts[label] != 1 else ''})"


def _kind_summary(labels: list[str], counts: Counter, kind: str) -> str:
    rows = sum(counts[label] for label in labels)
    return f"{kind}s {_quoted(_ordered_labels(labels))} ({rows:,} row{'s' if rows != 1 else ''})"


def _require_two_labels(train: pd.DataFrame, source: _Source, columns: _Columns) -> None:
    labels = train["label"].unique()
    if len(labels) < 2:
        raise FtwError(
            f"every row of {source.name} has the label '{labels[0]}'; a classifier needs at least two labels",
            f"check data.label_column (now '{columns.label}'; columns: {', '.join(source.columns)}), "
            "or add rows of the other labels")


def _require_known_labels(frames: dict[str, pd.DataFrame], labels: list[str]) -> None:
    known = set(labels)
    for split in ("validation", "test"):
        if split not in frames:
            continue
        unseen = _ordered_labels(set(frames[split]["label"]) - known)
        if unseen:
            note = " (-1 often marks unlabelled rows, as in GLUE test files)" if "-1" in unseen else ""
            raise FtwError(
                f"the {split} split has label{'s' if len(unseen) > 1 else ''} the training split never has: "
                f"{_quoted(unseen)}{note}; training labels are: {_quoted(labels, quote=False)}",
                f"add training rows with those labels, or remove those rows from the {split} data")


def _quoted(labels: list[str], quote: bool = True, limit: int = 10) -> str:
    """'a', 'b', … and 5 more: messages stay readable when a file has hundreds of labels."""
    shown = ", ".join(repr(label) if quote else label for label in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


# --------------------------------------------------------------------------- stratified sampling

def _allocate(counts: dict[str, int], total: int, low: int, keep: int) -> dict[str, int]:
    """Share `total` rows among labels in proportion to `counts`; each gets at least min(low, count)
    and at most count - keep. Largest remainders, ties by label name: depends only on the counts.
    Callers make sure the bounds allow `total`."""
    rows = sum(counts.values())
    ideal = {label: total * count / rows for label, count in counts.items()}
    bounds = {label: (min(low, count), count - keep) for label, count in counts.items()}
    share = {label: min(max(math.floor(ideal[label]), bounds[label][0]), bounds[label][1]) for label in counts}
    order = sorted(counts)
    while sum(share.values()) < total:
        label = max((l for l in order if share[l] < bounds[l][1]), key=lambda l: ideal[l] - share[l])
        share[label] += 1
    while sum(share.values()) > total:
        label = min((l for l in order if share[l] > bounds[l][0]), key=lambda l: ideal[l] - share[l])
        share[label] -= 1
    return share


def _pick(frame: pd.DataFrame, share: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """A mask choosing share[label] random rows of each label."""
    import numpy as np
    chosen = np.zeros(len(frame), dtype=bool)
    for label, positions in sorted(frame.groupby("label", sort=True).indices.items()):
        chosen[rng.permutation(positions)[:share[label]]] = True
    return chosen


def _sample(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    counts = frame["label"].value_counts().to_dict()
    share = _allocate(counts, rows, low=1 if rows >= len(counts) else 0, keep=0)
    return frame[_pick(frame, share, rng)].reset_index(drop=True)


def _hold_out(frame: pd.DataFrame, count: int, split: str, settings, rng: np.random.Generator,
              base: int, pool: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held out): `count` rows for `split`, every label on both sides."""
    counts = frame["label"].value_counts().to_dict()
    labels, rows = len(counts), len(frame)
    fraction_key = f"data.{split}_fraction"
    lonely = _ordered_labels(label for label, n in counts.items() if n < 2)
    if lonely:
        names = _quoted(lonely)
        raise FtwError(
            f"label{'s' if len(lonely) > 1 else ''} {names} {'have' if len(lonely) > 1 else 'has'} only one row "
            f"{pool}, so a stratified split cannot put {'them' if len(lonely) > 1 else 'it'} in both the "
            f"training and the {split} split",
            f"add rows of {names}, remove {'them' if len(lonely) > 1 else 'it'}, or give the {split} rows "
            f"in a separate file (data.{split}_source)")
    if count < labels:
        needed = math.ceil(100 * labels / base) / 100
        raise FtwError(
            f"the {split} split would get {count} of {base} rows ({fraction_key} = "
            f"{getattr(settings, f'{split}_fraction'):g}), too few to hold one row of each of the {labels} labels",
            f"raise {fraction_key} to at least {needed:g}, or use more rows"
            + (" (data.max_rows = 0 uses them all)" if settings.max_rows else ""))
    if rows - count < labels:
        raise FtwError(
            f"holding out {count} rows for the {split} split leaves {rows - count} training rows, "
            f"too few for the {labels} labels",
            "lower data.validation_fraction / data.test_fraction (e.g. 0.1 each), or use more rows")
    held = _pick(frame, _allocate(counts, count, low=1, keep=1), rng)
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


# --------------------------------------------------------------------------- datasets and fingerprint

def _to_dataset(frame: pd.DataFrame, labels: list[str]) -> "Dataset":
    from datasets import ClassLabel, Dataset, Features, Value
    ids = {name: index for index, name in enumerate(labels)}
    columns: dict[str, list] = {"text": frame["text"].tolist()}
    features = {"text": Value("string")}
    if "text_pair" in frame:
        columns["text_pair"] = frame["text_pair"].tolist()
        features["text_pair"] = Value("string")
    columns["label"] = [ids[name] for name in frame["label"]]
    features["label"] = ClassLabel(names=labels)
    return Dataset.from_dict(columns, features=Features(features))


def _fingerprint(frames: dict[str, pd.DataFrame], labels: list[str]) -> str:
    """A hash of exactly what the model will see: every split's rows in order, and the label names.
    The seed, fractions, max_rows and column choice all act through these, so any change shows."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(FORMAT_VERSION.encode())
    digest.update("\x1e".join(labels).encode())
    for split in sorted(frames):
        frame = frames[split]
        digest.update(f"\x1d{split}:{len(frame)}".encode())
        for column in frame.columns:
            digest.update(f"\x1c{column}".encode())
            digest.update("\x1f".join(frame[column]).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- tokenizing

def tokenize(data: PreparedData, tokenizer, max_length: int, cache_dir: Path) -> dict[str, "Dataset"]:
    """Token ids for every split (input_ids, attention_mask, maybe token_type_ids, labels, length),
    truncated at max_length and not padded (the collator pads per batch). Cached under cache_dir by
    data fingerprint + tokenizer identity + max_length; a cached result is loaded, not recomputed."""
    from datasets import DatasetDict, disable_progress_bars, load_from_disk
    disable_progress_bars()  # they only clutter worker.log and `ftw check`
    key = token_cache_key(data, tokenizer, max_length)
    folder = Path(cache_dir) / f"tokens-{key}"
    if not folder.is_dir():
        encoded = DatasetDict({
            name: split.map(encoder(tokenizer, max_length, data.pairs), batched=True,
                            remove_columns=split.column_names, new_fingerprint=f"{key}-{name}",
                            desc=f"tokenizing {name}")
            for name, split in data.splits.items()})
        _save_atomically(encoded, folder)
    loaded = load_from_disk(str(folder))
    return {name: loaded[name] for name in data.splits}


# Real data repeats a few rows (the packaged 3-way set: 1 %); beyond this share of a held-out split
# the repeats are a leak (a validation or test file that is the training file, or a source full of
# copies) and the split's metrics measure memory, not generalisation.
OVERLAP_NOTICE_SHARE = 0.05


def overlap_notices(prepared: PreparedData) -> list[str]:
    """A notice for each held-out split whose rows repeat training rows beyond OVERLAP_NOTICE_SHARE."""
    def rows(split) -> list[tuple]:
        pairs = split["text_pair"] if "text_pair" in split.column_names else [""] * len(split)
        return list(zip(split["text"], pairs))

    seen = set(rows(prepared.splits["train"]))
    notices = []
    for name in ("validation", "test"):
        if name not in prepared.splits or not len(prepared.splits[name]):
            continue
        held_out = rows(prepared.splits[name])
        repeated = sum(row in seen for row in held_out)
        if repeated > OVERLAP_NOTICE_SHARE * len(held_out):
            notices.append(f"{repeated:,} of the {len(held_out):,} {name} rows ({repeated / len(held_out):.0%}) "
                           f"are also training rows: {name} metrics will overstate how well the model "
                           f"does on new text; give it rows of its own (data.{name}_source) or remove "
                           "the duplicates")
    return notices


def clip_for_tokenizer(texts: list[str], max_length: int) -> list[str]:
    """Each text cut to what max_length tokens can cover (CHARS_PER_TOKEN characters a token), so
    tokenizer memory stays bounded by max_length however long a row is."""
    limit = max_length * CHARS_PER_TOKEN
    return [text if len(text) <= limit else text[:limit] for text in texts]


def tokenize_bounded(tokenizer, texts: tuple[list[str], ...], **options) -> dict[str, list]:
    """tokenizer(*texts, **options) in slices of at most CHARS_PER_CALL characters (one row at least),
    joined: the same result as one call, with memory bounded by the slice."""
    result: dict[str, list] = {}
    start = 0
    while start < len(texts[0]):
        end, size = start, 0
        while end < len(texts[0]) and (end == start or size + _row_chars(texts, end) <= CHARS_PER_CALL):
            size += _row_chars(texts, end)
            end += 1
        for key, values in tokenizer(*(column[start:end] for column in texts), **options).items():
            result.setdefault(key, []).extend(values)
        start = end
    return result


def _row_chars(texts: tuple[list[str], ...], row: int) -> int:
    return sum(len(column[row]) for column in texts)


def encoder(tokenizer, max_length: int, pairs: bool):
    """A batch of rows ({text, (text_pair), label} lists) to token ids, labels and lengths."""
    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = tuple(clip_for_tokenizer(batch[column], max_length)
                      for column in (("text", "text_pair") if pairs else ("text",)))
        encoded = tokenize_bounded(tokenizer, texts, truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded
    return encode


def _save_atomically(encoded, folder: Path) -> None:
    """Write beside the target, then rename: a half-written cache is never found by a later call."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        encoded.save_to_disk(str(temporary / "data"))
        os.replace(temporary / "data", folder)
    except OSError:
        if not folder.is_dir():   # another process finishing first is fine; anything else is not
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def token_cache_key(data: PreparedData, tokenizer, max_length: int) -> str:
    digest = hashlib.blake2b(digest_size=12)
    parts = (FORMAT_VERSION, data.fingerprint, tokenizer_identity(tokenizer), str(max_length),
             f"cut{CHARS_PER_TOKEN}")
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def tokenizer_identity(tokenizer) -> str:
    """A hash of what decides the token ids: class, vocabulary and rules, truncation side.
    The backend's truncation/padding state is left out: calling the tokenizer changes it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(tokenizer).__qualname__.encode())
    digest.update(str(getattr(tokenizer, "truncation_side", "")).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        digest.update(json.dumps(spec, sort_keys=True).encode())
    else:   # a pure-Python tokenizer: its vocabulary and simple settings
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        settings = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items()
                    if isinstance(v, (str, int, float, bool)) and k not in ("name_or_path", "vocab_file")}
        digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def token_length_stats(tokenized_train: "Dataset", max_length: int, bins: int = 20) -> dict:
    """Percentiles of token length, the share truncated (rows at max_length), and a histogram
    ({"edges": bins + 1 numbers, "counts": bins numbers}) over 0..max_length."""
    return _length_summary(tokenized_train["length"], max_length, max_length, bins)


def _length_summary(lengths: Iterable[int], max_length: int, top: int, bins: int = 20) -> dict:
    import numpy as np
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return {"rows": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0, "truncated": 0.0,
                "histogram": {"edges": [], "counts": []}}
    counts, edges = np.histogram(lengths, bins=bins, range=(0, max(top, 1)))
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    return {
        "rows": int(lengths.size),
        "p50": float(p50), "p90": float(p90), "p99": float(p99),
        "max": int(lengths.max()),
        "mean": float(lengths.mean()),
        "truncated": float((lengths >= max_length).mean()),
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


# --------------------------------------------------------------------------- preview

PREVIEW_TOKEN_ROWS = 2000   # enough for stable percentiles, quick to tokenize
PREVIEW_LENGTH_REACH = 4    # token lengths measured up to this many times max_length
PREVIEW_CELL_CHARS = 1000   # a preview cell is for reading: a 25 MB row would be 25 MB of JSON for the TUI


def preview(session: "Session", rows: int = 10, token_lengths: bool = True) -> dict:
    """The source as the TUI shows it, as plain JSON. Never raises for bad data: every problem
    (missing file, wrong column, one label, a model whose tokenizer will not load) is a message
    in "problems". With token_lengths, "token_lengths" holds untruncated token-length stats of up
    to PREVIEW_TOKEN_ROWS rows with the session's tokenizer; its histogram reaches past
    max_length, so the TUI can move max_length and read the truncated share off it."""
    settings = session.data
    result: dict[str, Any] = {
        "source": settings.source, "columns": [], "rows": [], "total": 0, "splits": {},
        "label_distribution": {}, "text_column": settings.text_column,
        "text_pair_column": settings.text_pair_column, "label_column": settings.label_column,
        "dropped": {}, "token_lengths": {}, "problems": [], "augmented": [],
    }
    try:
        source = _load_source(session, settings.source, "data.source")
    except FtwError as err:
        result["problems"].append(err.message)
        return result
    frame = source.frames["train"]
    columns = _slices_of(source, _columns_for(session, source), needed=not session.data.test_source)
    result.update({
        "columns": source.columns,
        "rows": [{str(k): _clip(v, PREVIEW_CELL_CHARS) for k, v in row.items()}
                 for row in _string_frame(frame.head(rows)).to_dict("records")],
        "total": len(frame),
        "splits": {name: len(split) for name, split in source.frames.items()},
        "text_column": columns.text, "label_column": columns.label,
    })
    problems = _column_problems(source, columns)
    result["problems"] = [problem.message for problem in problems]
    if problems:
        if columns.label in source.columns:
            result["label_distribution"] = _distribution(_as_strings(frame[columns.label]).str.strip())
        return result
    try:
        dropped: Counter = Counter()
        clean = _clean(frame, columns, source, dropped)
        result["dropped"] = dict(dropped)
        result["label_distribution"] = _distribution(clean["label"])
        _require_consistent_labels(clean, columns)
        _require_sane_label_count(clean, columns)
        _require_two_labels(clean, source, columns)
        result["augmented"] = _preview_augmented(session, clean)
        if token_lengths:
            result["token_lengths"] = _preview_lengths(session, clean)
    except FtwError as err:
        result["problems"].append(err.message)
    return result


PREVIEW_AUGMENTED_ROWS = 3


def _preview_augmented(session: "Session", clean: pd.DataFrame) -> list[dict]:
    """The first rows beside their augmented variants (engine.augment), when a method is on; words
    to insert come from the whole source here (training draws them from its split alone)."""
    from engine import augment
    return augment.preview_variants(clean["text"].head(PREVIEW_AUGMENTED_ROWS).tolist(),
                                    clean["label"].head(PREVIEW_AUGMENTED_ROWS).tolist(),
                                    clean["text"].tolist(), session.augment, session.train.seed)


def _preview_lengths(session: "Session", clean: pd.DataFrame) -> dict:
    from engine import models
    try:
        tokenizer = models.load_tokenizer(session.resolve(session.model.source), session.model.trust_remote_code)
    except FtwError as err:   # the data is fine; say why its token lengths are missing
        raise FtwError(f"token lengths need the model's tokenizer: {err.problem}", err.fix) from None
    sample = clean.sample(n=PREVIEW_TOKEN_ROWS, random_state=0) if len(clean) > PREVIEW_TOKEN_ROWS else clean
    max_length = session.train.max_length
    # Lengths past max_length are measured (the TUI shows what a longer max_length would keep), up to
    # PREVIEW_LENGTH_REACH times it: a longer row cannot make the tokenizer's memory grow with it.
    columns = ["text"] + (["text_pair"] if "text_pair" in sample else [])
    texts = [clip_for_tokenizer(sample[column].tolist(), PREVIEW_LENGTH_REACH * max_length) for column in columns]
    # verbose=False: no "longer than the model's maximum" warning; measuring that is the point.
    encoded = tokenize_bounded(tokenizer, tuple(texts), truncation=False, verbose=False)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    return _length_summary(lengths, max_length, top=max(max_length, max(lengths)))


def _string_frame(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd
    return pd.DataFrame({str(column): _as_strings(frame[column]) for column in frame.columns})


def _distribution(labels: pd.Series) -> dict[str, int]:
    counts = labels[labels != ""].value_counts().to_dict()
    return {label: int(counts[label]) for label in _ordered_labels(counts)}
