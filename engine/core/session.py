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

from engine.core.durable import fsync_dir, plain_file_mode
from engine.core.errors import FtwError
from engine.core.locations import file_in_the_way, looks_like_path

SCHEMA = 1
SESSIONS_ENV = "FTW_SESSIONS_DIR"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# ---------------------------------------------------------------- how a setting is declared
# Each setting is declared once, as a field of its section below: default, help, what values it
# allows, and whether changing it breaks an exact resume. Validation (RULES, CHOICES), the TUI's
# fields, docs/session.md (`python -m engine.core.session`) and the resume diff are derived from it.


@dataclass(frozen=True)
class Rule:
    check: Callable[[Any], bool]
    allowed: str  # what is allowed, in words: "an integer from 1 to 4096"


def at_least(low: int | float, noun: str = "an integer") -> Rule:
    return Rule(lambda v: v >= low, f"{noun} >= {low}")


def between(low: int | float, high: int | float, noun: str = "an integer") -> Rule:
    return Rule(lambda v: low <= v <= high, f"{noun} from {low} to {high}")


NOT_EMPTY = Rule(lambda v: bool(v.strip()), "not empty")
NO_VALUE = object()  # Spec.before_key_existed when the key has always been recorded


@dataclass(frozen=True)
class Spec:
    help: str                      # one line: the TUI's help line, the docs' meaning
    rule: Rule | None = None       # range or form; choices make their own
    choices: tuple[str, ...] = ()  # the words it takes (a typo gets a "did you mean")
    breaks_resume: bool = False    # a changed value makes a checkpoint's state meaningless
    details: str = ""              # more, for docs/session.md only
    before_key_existed: Any = NO_VALUE  # what an older checkpoint without the key meant


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A section field with its Spec in the field's metadata."""
    meta = {"spec": Spec(help, **spec)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def label_values(entries: list[str], number=float) -> dict[str, Any]:
    """'label=value' entries (class weights, per-class copies) as {label: value}; ValueError when
    one is not of that form. The label is everything before the last '=' (labels may hold '=')."""
    found: dict[str, Any] = {}
    for entry in entries:
        label, sep, value = entry.rpartition("=")
        if not sep or not label.strip():
            raise ValueError(f"{entry!r} is not label=value")
        found[label.strip()] = number(value.strip())
    return found


def _label_numbers(number, allowed: str) -> Rule:
    def check(entries: list[str]) -> bool:
        try:
            values = label_values(entries, number)
        except ValueError:
            return False
        return all(math.isfinite(v) and v >= 0 for v in values.values())
    return Rule(check, allowed)


LABEL_WEIGHTS = _label_numbers(float, "label=weight entries with a weight >= 0, e.g. plot=4, fresh=1")
LABEL_COPIES = _label_numbers(int, "label=copies entries with whole copies >= 0, e.g. plot=4")


FREEZE_PRESETS = ("none", "head-only", "top-k", "all-but-embeddings", "custom")
ADAPTER_METHODS = ("none", "lora", "ia3")
ADAPTER_BLOCKS = ("all", "top-k", "custom")
ADAPTER_TARGETS = ("attention", "all-linear", "custom")
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STRATEGIES = ("epoch", "steps", "no")
METRICS = ("macro_f1", "accuracy", "weighted_f1", "loss")
CLASS_WEIGHTS = ("none", "inverse-frequency", "given")


GROUP_BY_LENGTH_DETAILS = (
    "Each window of 50 batches takes every label in proportion; inside it each label's rows are sorted by "
    "length and dealt to the batches side by side, so every batch has the label mix of a random batch (plain "
    "length grouping made one-class batches where length predicts the label, and the model learned the "
    "batch's class instead of the text). A step then runs its batch as a few length-sorted sub-batches (one "
    "forward each, one backward: the whole batch's loss and gradient), so short rows are not padded to the "
    "long ones (single-process runs). `ftw check` reports the padding share against random batches, and a "
    "notice when a length-only classifier predicts the label well above chance; where it gives the label "
    "away (over 55 % of the way from chance to perfect), even these batches lost accuracy against random "
    "ones (`bench accuracy`, docs/benchmarks.md): such a run takes random batches and says so. `false`: "
    "random batches")
TOP_BLOCK_DETAILS = (
    "A sequence classifier reads one position of the top block: the first token for the BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA and DistilBERT families, the last token that is not padding for LLaMA-family decoders (SmolLM2). The top block's queries, attention, output projection and feed-forward then run for that token alone (keys and values still come from every token): the same logits and gradients up to float rounding, for about a sixth of the block's matmul work. Other models (DeBERTa, GPT-2) keep the full block. Dropout masks are drawn for fewer elements, so the random stream differs from `false`; recorded for exact resume")
PREFIX_CACHE_DETAILS = (
    'Applies when the frozen groups are exactly `embeddings`, `block.0` … `block.k-1` (e.g. `freeze.preset = "top-k"`); otherwise the run warns and trains without it. The frozen prefix then always runs in eval mode (no dropout), every epoch; from the second time an example is seen, blocks below k are skipped for it (training and validation examples alike; the test split is predicted on the full path). Results equal those of running the frozen prefix in eval mode (up to float rounding). Not checkpointed: a resumed run refills it')

CLASS_WEIGHTS_DETAILS = (
    "The training loss is each row's cross-entropy times its label's weight, averaged over the rows (the same "
    "with length-grouped sub-batches and gradient accumulation). inverse-frequency weighs a label rows / "
    "(labels x its rows) of the training split (sklearn's 'balanced'): the weights average 1 over the rows, so "
    "the loss keeps the scale of the unweighted one. Validation and test losses stay unweighted, so runs with "
    "and without weights compare. `ftw check` warns when the training split is imbalanced and suggests this")
BALANCED_SAMPLING_DETAILS = (
    "Each epoch draws as many rows as the training split has, every label equally likely (rows of a rare "
    "label repeat, rows of a common one are left out), from (train.seed, epoch) alone: a resume replays it. "
    "With train.group_by_length the drawn rows are then length-grouped with every label mixed in each batch, "
    "as usual")

@dataclass
class ModelSettings:
    source: str = setting("builtin:minilm-l6", "builtin name (builtin:minilm-l6), a local Hugging Face folder, or a "
                          "hub id", rule=Rule(NOT_EMPTY.check, "a builtin name, folder or hub id"), breaks_resume=True)
    trust_remote_code: bool = setting(False, "run code shipped with the model (only for sources you trust)")


@dataclass
class DataSettings:
    source: str = setting("builtin:rotten-tomatoes", "builtin name, or a csv/tsv/json/jsonl/parquet file or "
                          "datasets folder", rule=Rule(NOT_EMPTY.check, "a builtin name, file or folder"),
                          breaks_resume=True)
    text_column: str = setting("text", "column holding the text to classify",
                               rule=Rule(NOT_EMPTY.check, "a column name"), breaks_resume=True)
    text_pair_column: str = setting("", "optional second text column (sentence pairs); empty for none",
                                    breaks_resume=True)
    label_column: str = setting("label", "column holding the label (strings or integers)",
                                rule=Rule(NOT_EMPTY.check, "a column name"), breaks_resume=True)
    validation_source: str = setting("", "separate validation file; empty to split it off the source",
                                     breaks_resume=True)
    test_source: str = setting("", "separate test file; empty to split it off the source", breaks_resume=True)
    validation_fraction: float = setting(0.1, "share of rows held out for validation when splitting",
                                         rule=Rule(lambda v: 0 < v < 1, "a number between 0 and 1"),
                                         breaks_resume=True)
    test_fraction: float = setting(0.1, "share of rows held out for the test when splitting",
                                   rule=Rule(lambda v: 0 <= v < 1, "a number from 0 up to 1"), breaks_resume=True)
    max_rows: int = setting(0, "use only this many rows (stratified sample); 0 for all",
                            rule=Rule(lambda v: v >= 0, "an integer >= 0 (0 for all rows)"), breaks_resume=True)
    train_fraction: float = setting(1.0, "train on this stratified share of the training split (learning curves); "
                                    "validation and test stay whole", rule=Rule(lambda v: 0 < v <= 1,
                                                                                "a number > 0 and <= 1"),
                                    breaks_resume=True, before_key_existed=1.0,
                                    details="Drawn after the validation and test rows are held out, seeded by "
                                    "train.seed, every label kept; `ftw study NAME --fractions` sets it per trial")


@dataclass
class FreezeSettings:
    preset: str = setting("none", "none, head-only, top-k (train the top k blocks), all-but-embeddings, custom",
                          choices=FREEZE_PRESETS, breaks_resume=True)
    top_k: int = setting(2, "with preset top-k: how many top blocks stay trainable", rule=at_least(0),
                         breaks_resume=True)
    frozen: list[str] = setting([], "with preset custom: the parameter groups to freeze (embeddings, block.0, …)",
                                breaks_resume=True)


ADAPTER_DETAILS = (
    "With an adapter, every parameter group's own weights are frozen except the head (always trained in "
    "full) and the groups in `adapter.train_fully`; the adapted blocks train only their adapter (peft). "
    "`[freeze]` then stays at preset \"none\". `ftw check` reports the trainable parameters, their share "
    "and the gradient + optimizer-state memory")
IA3_DETAILS = ("LoRA: two low-rank matrices beside each targeted linear layer (r × (in + out) parameters); "
               "IA³: one scaling vector per targeted layer (its output size; its input size for the "
               "feed-forward down projection)")


@dataclass
class AdapterSettings:
    method: str = setting("none", "none, lora or ia3: train small adapters instead of the blocks' own weights",
                          choices=ADAPTER_METHODS, breaks_resume=True, before_key_existed="none", details=ADAPTER_DETAILS + ". " + IA3_DETAILS)
    blocks: str = setting("all", "which blocks get an adapter: all, top-k (the top adapter.top_k) or custom "
                          "(adapter.custom)", choices=ADAPTER_BLOCKS, breaks_resume=True, before_key_existed="all")
    top_k: int = setting(2, "with blocks top-k: how many top blocks get an adapter", rule=at_least(1),
                         breaks_resume=True, before_key_existed=2)
    custom: list[str] = setting([], "with blocks custom: the blocks given an adapter (block.4, …)",
                                breaks_resume=True, before_key_existed=[])
    r: int = setting(8, "LoRA rank", rule=between(1, 4096), breaks_resume=True, before_key_existed=8)
    alpha: int = setting(16, "LoRA alpha (the update is scaled by alpha / r)", rule=between(1, 65536),
                         breaks_resume=True, before_key_existed=16)
    dropout: float = setting(0.05, "LoRA dropout", rule=Rule(lambda v: 0 <= v < 1, "a number from 0 up to 1"),
                             breaks_resume=True, before_key_existed=0.05)
    targets: str = setting("attention", "linear layers given an adapter inside an adapted block: attention, "
                           "all-linear or custom (adapter.target_modules)", choices=ADAPTER_TARGETS,
                           breaks_resume=True, before_key_existed="attention")
    target_modules: list[str] = setting([], "with targets custom: the linear layers' names (q_proj, value, …)",
                                        breaks_resume=True, before_key_existed=[])
    ranks: dict = setting({}, "per-block LoRA rank overrides, e.g. { \"block.5\" = 16 }", breaks_resume=True, before_key_existed={})
    train_fully: list[str] = setting([], "groups without an adapter trained in full (embeddings, block.N, "
                                     "pooler); the head always is", breaks_resume=True, before_key_existed=[])


@dataclass
class TrainSettings:
    epochs: float = setting(1.0, "passes over the training split (fractions allowed)",
                            rule=Rule(lambda v: v > 0, "a number > 0"))
    max_steps: int = setting(0, "stop after this many optimizer steps; 0 to use epochs", rule=at_least(0))
    batch_size: int = setting(16, "examples per device per step", rule=between(1, 4096), breaks_resume=True)
    eval_batch_size: int = setting(64, "examples per step when evaluating", rule=between(1, 4096))
    gradient_accumulation: int = setting(1, "steps to accumulate before each optimizer update",
                                         rule=between(1, 1024), breaks_resume=True)
    learning_rate: float = setting(5e-5, "peak learning rate of AdamW",
                                   rule=Rule(lambda v: 0 < v <= 1, "a number > 0 and <= 1, e.g. 5e-5"),
                                   breaks_resume=True)
    weight_decay: float = setting(0.0, "AdamW weight decay", rule=between(0, 1, "a number"), breaks_resume=True)
    warmup_ratio: float = setting(0.0, "share of steps spent warming the learning rate up",
                                  rule=Rule(lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
                                  breaks_resume=True)
    scheduler: str = setting("linear", "learning-rate schedule: linear, cosine or constant", choices=SCHEDULERS,
                             breaks_resume=True)
    seed: int = setting(0, "random seed for splits, initialisation, dropout and data order",
                        rule=Rule(lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32-1"), breaks_resume=True)
    max_length: int = setting(128, "tokens per example; longer texts are truncated", rule=between(8, 8192),
                              breaks_resume=True)
    precision: str = setting("auto", "auto (bf16 where the hardware is fast at it), fp32, bf16 or fp16 (GPU)",
                             choices=PRECISIONS, breaks_resume=True)
    group_by_length: bool = setting(True, "batch examples of similar length together, every label mixed in each "
                                    "batch (less padding, faster)", breaks_resume=True,
                                    details=GROUP_BY_LENGTH_DETAILS)
    top_block_one_token: bool = setting(
        True, "the top block computes only the token the classification head reads (exact; faster)",
        breaks_resume=True, before_key_existed=False, details=TOP_BLOCK_DETAILS)
    eval_strategy: str = setting("epoch", "when to evaluate: epoch, steps (every eval_steps) or no",
                                 choices=STRATEGIES)
    eval_steps: int = setting(100, "with eval_strategy steps: evaluate every this many steps", rule=at_least(1))
    save_strategy: str = setting("epoch", "when to checkpoint: epoch, steps (every save_steps) or no",
                                 choices=STRATEGIES)
    save_steps: int = setting(100, "with save_strategy steps: checkpoint every this many steps", rule=at_least(1))
    keep_checkpoints: int = setting(2, "how many of the newest complete checkpoints to keep (at least 1); the best "
                                    "one (by metric_for_best) is kept as well when it is older, so there can be "
                                    "one more", rule=between(1, 100))
    early_stopping_patience: int = setting(0, "stop after this many evaluations without improvement; 0 off",
                                           rule=at_least(0))
    # The best metric so far, early stopping's count and the best checkpoint were judged by it.
    metric_for_best: str = setting("macro_f1", "metric that picks the best checkpoint: macro_f1, accuracy, "
                                   "weighted_f1, loss", choices=METRICS, breaks_resume=True)
    logging_steps: int = setting(10, "report train loss every this many steps", rule=at_least(1))
    threads: int = setting(0, "CPU threads for torch; 0 for torch's default (recorded for exact resume)",
                           rule=between(0, 1024))
    devices: int = setting(1, "processes to train with (GPUs, or CPU processes); >1 launches torchrun",
                           rule=between(1, 64), breaks_resume=True)
    prefix_cache: bool = setting(False, "with embeddings + bottom blocks frozen: run them once (eval mode) and "
                                 "reuse their output", breaks_resume=True, details=PREFIX_CACHE_DETAILS)
    prefix_cache_mb: int = setting(1024, "memory for the prefix cache, in MB; beyond it, entries spill to a file "
                                   "in the run folder", rule=Rule(lambda v: 0 <= v <= 1048576,
                                                                  "an integer from 0 to 1048576 (0: all on disk)"),
                                   details="The file is `prefix-cache.bin`, deleted when training ends")
    class_weights: str = setting("none", "weight each label's share of the loss: none, inverse-frequency (rare "
                                 "labels count more) or given (train.class_weight_values)", choices=CLASS_WEIGHTS,
                                 breaks_resume=True, before_key_existed="none", details=CLASS_WEIGHTS_DETAILS)
    class_weight_values: list[str] = setting([], 'with class_weights = "given": label=weight entries, e.g. '
                                             'plot=4; labels not named weigh 1', rule=LABEL_WEIGHTS,
                                             breaks_resume=True, before_key_existed=[])
    balanced_sampling: bool = setting(False, "draw training rows so every label is equally likely (with "
                                      "replacement; an epoch keeps its number of rows)", breaks_resume=True,
                                      before_key_existed=False, details=BALANCED_SAMPLING_DETAILS)


def _fractions_ok(text: str) -> bool:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        return False
    return bool(values) and all(0 < v <= 1 for v in values) and values == sorted(set(values))


SPACE_DETAILS = (
    "One line per setting. A range: `train.learning_rate = 1e-5..1e-3 log` (log-uniform), "
    "`train.warmup_ratio = 0..0.2`, `train.epochs = 1..4` (integers for integer settings); choices: "
    "`train.batch_size = 8&#124;16&#124;32`, `train.scheduler = linear&#124;cosine`. Every value must be one the setting "
    "allows; the space is checked when a study starts (unknown keys get a did-you-mean). Empty: the default "
    "space (learning rate, batch size, warmup, weight decay, scheduler). See docs/studies.md")


@dataclass
class StudySettings:
    """The plan of `ftw study NAME`: read when a study starts (flags override it) and frozen into the
    study's plan.json; a study never writes the session (docs/studies.md)."""

    space: list[str] = setting([], "the search space of `ftw study --search`, one line per setting "
                               "(e.g. train.learning_rate = 1e-5..1e-3 log); empty: the default space",
                               before_key_existed=[], details=SPACE_DETAILS)
    trials: int = setting(20, "search: how many trials (complete, pruned or failed)", rule=between(1, 10000),
                          before_key_existed=20)
    timeout_s: int = setting(0, "search: stop drawing new trials after this many seconds; 0 for no limit",
                             rule=at_least(0), before_key_existed=0)
    seeds: int = setting(5, "seeds study: how many seeds (the session's train.seed, +1, …); fractions study: seeds per fraction",
                         rule=between(1, 1000), before_key_existed=5)
    fractions: str = setting("0.1,0.25,0.5,1", "fractions study: shares of the training split, ascending",
                             rule=Rule(_fractions_ok, "ascending numbers > 0 and <= 1, e.g. 0.1,0.25,0.5,1"),
                             before_key_existed="0.1,0.25,0.5,1")
    eval_steps: int = setting(0, "evaluate (and checkpoint) every this many steps in each trial, so the pruner "
                              "sees the curve; 0 keeps the session's cadence", rule=at_least(0),
                              before_key_existed=0)


# Slices made from every row rather than read from a column (engine/slices.py computes them).
DERIVED_SLICES = {"@length": "token-length quartiles", "@truncated": "longer than train.max_length tokens or not",
                  "@label": "each gold label"}
SLICES_DETAILS = (
    "A column name is any column of the source the test rows come from (data.test_source when set, else "
    "data.source; a validation file need not have it), kept beside "
    "the splits and never shown to the model; a name the data lacks is refused by `ftw check`, `ftw set` and "
    "at the start of a run, with the columns listed. Per slice value: rows, accuracy, macro F1 (sklearn), "
    "a seeded percentile-bootstrap 95 % interval of each, and the gap to the overall figure; a value with "
    "fewer than 30 rows is flagged small (its interval is then wider than about +-0.18); the worst value "
    "(lowest macro F1 among those not small) is named. Computed on the test split at the end of a run "
    "(results.json) and by `ftw eval`")


def _slice_names(names: list[str]) -> bool:
    return all(name.strip() and (not name.startswith("@") or name in DERIVED_SLICES) for name in names)


@dataclass
class EvalSettings:
    slices: list[str] = setting([], "slices the test metrics are broken down by: data columns and "
                                "@length, @truncated, @label",
                                rule=Rule(_slice_names, "column names, or " + ", ".join(DERIVED_SLICES)),
                                details=SLICES_DETAILS, before_key_existed=[])


AUGMENT_DETAILS = (
    "Each augmented copy of a training row applies every method whose rate is above 0, in this order: swap, "
    "delete, insert, typos, case, punctuation. A copy is drawn anew every epoch from (train.seed, epoch, row, "
    "copy) alone, so a resumed run replays it; validation and test rows are never augmented. `ftw check` counts "
    "the training rows that result, `ftw preview` and the Data tab show a row beside its variants. Synonym "
    "replacement and masked-language-model substitution are not offered: they need a lexicon or a second model "
    "that ftw does not ship")
RATE = between(0, 1, "a number")


@dataclass
class AugmentSettings:
    copies: int = setting(0, "augmented copies of every training row (drawn anew each epoch); 0 for none",
                          rule=between(0, 100), breaks_resume=True, before_key_existed=0, details=AUGMENT_DETAILS)
    swap: float = setting(0.0, "share of a row's words swapped with another of its words", rule=RATE,
                          breaks_resume=True, before_key_existed=0.0)
    delete: float = setting(0.0, "chance that each word is dropped (one word always stays)", rule=RATE,
                            breaks_resume=True, before_key_existed=0.0)
    insert: float = setting(0.0, "share of a row's length inserted as words from the training split's own "
                            "vocabulary", rule=RATE, breaks_resume=True, before_key_existed=0.0)
    typos: float = setting(0.0, "chance that each character gets a typo (dropped, doubled, swapped with the next "
                           "or replaced)", rule=RATE, breaks_resume=True, before_key_existed=0.0)
    case: float = setting(0.0, "chance that each word's case changes (lower, upper or capitalised)", rule=RATE,
                          breaks_resume=True, before_key_existed=0.0)
    punctuation: float = setting(0.0, "chance that each word gains a punctuation mark or loses its own", rule=RATE,
                                 breaks_resume=True, before_key_existed=0.0)
    balance_classes: bool = setting(False, "rarer labels get more copies, so each label's rows come near the "
                                    "largest label's (at most 20 copies a row)", breaks_resume=True,
                                    before_key_existed=False)
    class_copies: list[str] = setting([], "label=copies entries overriding augment.copies for those labels, "
                                      "e.g. plot=4", rule=LABEL_COPIES, breaks_resume=True, before_key_existed=[])


SECTIONS: dict[str, type] = {
    "model": ModelSettings,
    "data": DataSettings,
    "augment": AugmentSettings,
    "freeze": FreezeSettings,
    "adapter": AdapterSettings,
    "train": TrainSettings,
    "study": StudySettings,
    "eval": EvalSettings,
}

# key -> its declaration, and what is derived from them
SPECS: dict[str, Spec] = {f"{section}.{f.name}": f.metadata["spec"]
                          for section, cls in SECTIONS.items() for f in fields(cls)}
# Settings that take one of a few words (a typo gets a "did you mean").
CHOICES: dict[str, tuple[str, ...]] = {key: spec.choices for key, spec in SPECS.items() if spec.choices}
# Range and choice rules: key -> (check, what is allowed).
RULES: dict[str, tuple[Any, str]] = {
    key: (lambda v, words=spec.choices: v in words, "one of " + ", ".join(spec.choices)) if spec.choices
    else (spec.rule.check, spec.rule.allowed)
    for key, spec in SPECS.items() if spec.choices or spec.rule}
BREAKS_RESUME: tuple[str, ...] = tuple(key for key, spec in SPECS.items() if spec.breaks_resume)


@dataclass
class Session:
    """A session's settings plus where it lives. `path` is the TOML file."""

    path: Path
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    freeze: FreezeSettings = field(default_factory=FreezeSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    study: StudySettings = field(default_factory=StudySettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

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
        rule = RULES.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            example = {"eval.slices": '["source", "@label"]', "study.space": '["train.learning_rate = 1e-5..1e-3 log"]',
                       "adapter.target_modules": '["query", "value"]'}.get(
                key, '["plot=4"]' if rule else '["embeddings", "block.0"]')
            raise FtwError(f"{key} = {value!r} is not a list of " + ("lines" if key == "study.space" else "names"),
                           f'write it as {key.split(".")[1]} = {example}')
        if rule and not rule[0](value):
            if key == "eval.slices":  # name the entries, with a did-you-mean for a derived one
                bad = [name for name in value if not rule[0]([name])]
                raise FtwError(f"{key}: {', '.join(repr(name) for name in bad)} is not allowed"
                               f"{_hint(bad[0], DERIVED_SLICES) if bad[0].startswith('@') else ''}",
                               f"{key} takes {rule[1]}")
            raise FtwError(f"{key} = {value!r} is not of its form", f"{key} must be {rule[1]}")
        return value
    if expected is dict:
        return _coerce_ranks(key, value)
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


def _coerce_ranks(key: str, value: Any) -> dict[str, int]:
    """A table of group name -> positive integer (adapter.ranks)."""
    example = f'{key.split(".")[1]} = {{ "block.5" = 16 }}'
    if not isinstance(value, dict):
        raise FtwError(f"{key} = {value!r} is not a table of group names and ranks", f"write it as {example}")
    for name, rank in value.items():
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= 4096:
            raise FtwError(f"{key}: {name} = {rank!r} is not a rank", f"each rank is an integer from 1 to 4096: {example}")
    return dict(value)


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


ADAPTER_WITH_FREEZE = ("with an adapter, the groups without one are frozen (the head is always trained in full), "
                      "and adapter.train_fully lists those to train in full")


def _check_combinations(session: Session) -> None:
    if session.adapter.method != "none" and session.freeze.preset != "none":
        raise FtwError(f"adapter.method = {session.adapter.method!r} with freeze.preset = "
                       f"{session.freeze.preset!r}: {ADAPTER_WITH_FREEZE}",
                       'set freeze.preset = "none" and list the groups to train in full in adapter.train_fully')
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
    missing = [(section, name) for section, name in (key.split(".") for key in REQUIRED_KEYS)
               if name not in (data.get(section) or {})]
    if not missing:
        return
    what = "is empty" if not data else "does not say what to train: no " + " and no ".join(
        f"{section}.{name}" for section, name in missing)
    lines = "; ".join(f'[{section}] {name} = "…"' for section, name in missing)
    raise FtwError(f"{path.name} {what} (a truncated or unfinished file?)",
                   f"add {lines} to it in an editor, or create a new session with `ftw new NAME --model … --data …`")


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
            current = table[name]  # tomlkit hands booleans back as plain bool (no unwrap)
            if (current.unwrap() if hasattr(current, "unwrap") else current) != value:  # 1 and 1.0 alike
                table[name] = _toml_value(value)
        elif key in touched or value != defaults.get(key) or key in always:
            if table is None:
                table = document[section] = tomlkit.table()
            table[name] = _toml_value(value)
    return tomlkit.dumps(document)


def _toml_value(value: Any) -> Any:
    """A table value (adapter.ranks) stays on its key's line: `ranks = { "block.5" = 16 }`."""
    if isinstance(value, dict):
        inline = tomlkit.inline_table()
        inline.update(value)
        return inline
    return value


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
    payload = to_toml(session, touched, template).encode("utf-8")
    try:
        _write_atomically(session.path, payload)
    except OSError as err:
        raise FtwError(f"cannot write {session.path}: {err.strerror or err}",
                       "use a sessions folder you can write to (--sessions-dir), with space left on its disk") from None


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp's file is 0600; the session keeps its own mode, or a new file's usual one
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else plain_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name or "") or ".." in name:
        raise FtwError(f"'{name}' is not a valid session name",
                       "use letters, digits, '.', '_' or '-' (no slashes, no '..'; at most 64 characters)")
    return name


def sessions_dir(override: str | os.PathLike | None = None) -> Path:
    """The sessions folder (it may not exist yet); FtwError when a file stands where it would be."""
    given = override or os.environ.get(SESSIONS_ENV) or "sessions"
    folder = Path(given).expanduser().resolve()
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise FtwError(f"the sessions folder {given} cannot be a folder: {blocker} is a file",
                       f"give a folder with --sessions-dir or ${SESSIONS_ENV} (it is created when missing)")
    return folder


def session_path(name_or_path: str, folder: Path) -> Path:
    """A session by name in the sessions folder, or by a path to its .toml file. A bare NAME.toml
    is that file here if it exists, else NAME in the sessions folder (`ftw new NAME.toml` made it)."""
    if name_or_path.endswith(".toml"):
        typed = Path(name_or_path).expanduser()
        if typed.exists() or len(typed.parts) > 1:
            return typed.resolve()
        return folder / f"{validate_name(typed.stem)}.toml"
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
    name = name.removesuffix(".toml")  # `ftw new x.toml` means the session x, in x.toml
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
        if text.strip().startswith("["):  # the session file's own form: ["a", "b"]
            return _toml_literal(key, text, list, f'{key}=a,b or {key}=["a", "b"]')
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(default, dict):
        if text.strip().startswith("{"):  # the session file's own form: { "block.4" = 16 }
            return _toml_literal(key, text, dict, f'{key}=block.4=16,block.5=32 or {key}={{ "block.4" = 16 }}')
        return _parse_ranks(key, text)
    caster = type(default)
    try:
        return caster(text.strip()) if caster is not str else text
    except ValueError:
        kind = "an integer" if caster is int else "a number"
        raise FtwError(f"{key} = {text!r} is not {kind}", f"{key} must be {kind}") from None


def _toml_literal(key: str, text: str, kind: type, form: str) -> Any:
    """A list or table typed as the session file writes it; its items are words (lists) or
    integers (tables), else FtwError (it was taken as one word, brackets and all, and saved)."""
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError as err:
        raise FtwError(f"{key} = {text!r} is not a TOML {'list' if kind is list else 'table'} ({err})",
                       f"write {form}") from None
    items = value if kind is list else list(value.values())
    wanted = str if kind is list else int
    if not isinstance(value, kind) or not all(isinstance(i, wanted) and not isinstance(i, bool) for i in items):
        raise FtwError(f"{key} = {text!r} does not give {'words' if kind is list else 'NAME = RANK integers'}",
                       f"write {form}")
    return value


def _parse_ranks(key: str, text: str) -> dict[str, Any]:
    """"block.4=16, block.5=32" -> {"block.4": 16, "block.5": 32}."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, rank = part.partition("=")
        if not sep or not name.strip() or not rank.strip().lstrip("-").isdigit():
            raise FtwError(f"{key}: {part!r} is not NAME=RANK", f"write {key}=block.4=16,block.5=32")
        out[name.strip().strip('"')] = int(rank)
    return out


def field_help(key: str) -> str:
    _split_key(key)
    return SPECS[key].help


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


REFERENCE_HEAD = """# Session file reference

Every key of `sessions/<name>.toml` (schema 1), its default and meaning, and whether a resumed run
may change it (the others must match the checkpoint: `ftw run --resume` refuses and lists them).
Unknown keys are errors; values are type- and range-checked on load. This page is made from the
declarations in `engine/core/session.py` by `python -m engine.core.session > docs/session.md`, and
`tests/test_docs.py` checks that it is up to date.

A session file must say what it trains: `[model] source` and `[data] source` are required (every
other key has the default below). An empty, truncated or half-written file is refused with what
it lacks, never run on the packaged defaults.

Files are meant to be edited by hand, and ftw's writers (`ftw new`, `ftw set`, the workbench)
keep them that way (tomlkit round trips): comments, order and layout stay; a changed key is
changed on its own line; a key the file lacks is added under its table when it is set (by `ftw
set` or a field of the workbench, even to its default value: the user chose it) or when it differs
from its default. A key once written stays written, also when set back to its default. `ftw new`
writes only the model and data keys (source, text_column, label_column) and what you passed.
"""


def reference_markdown() -> str:
    """docs/session.md, derived from the settings' declarations."""
    parts = [REFERENCE_HEAD]
    for section, cls in SECTIONS.items():
        parts.append(f"\n## [{section}]\n\n| key | default | meaning | on resume |\n|---|---|---|---|\n")
        for f in fields(cls):
            key, spec = f"{section}.{f.name}", f.metadata["spec"]
            default = tomlkit.item(_toml_value(getattr(cls(), f.name))).as_string()
            meaning = spec.help + (f". {spec.details}" if spec.details else "")
            if key in RULES:
                meaning += f" ({RULES[key][1]})"
            resume = "must match" if spec.breaks_resume else "may change"
            parts.append(f"| `{f.name}` | `{default}` | {meaning} | {resume} |\n")
    return "".join(parts)


if __name__ == "__main__":
    print(reference_markdown(), end="")
