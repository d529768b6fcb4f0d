"""Past-tense messages that thread workers post when an engine sub-command answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class ModelInspected(Message):
    """`inspect-model` answered: the model's facts and its parameter groups in order (sized for
    2 labels; the head grows by head_per_label for each label more)."""

    source: str
    model: dict[str, Any]
    groups: list[dict[str, Any]]
    head_per_label: int = 0


@dataclass
class ModelsListed(Message):
    """`models` answered: builtin models (with installed flags) and models in the HF cache."""

    builtin: list[dict[str, Any]]
    cached: list[str]


@dataclass
class DataPreviewed(Message):
    """`preview` answered for the session's current data settings."""

    preview: dict[str, Any]
    adopt_columns: bool


@dataclass
class LabelsCounted(Message):
    """The data preview found this many distinct labels."""

    count: int


@dataclass
class SessionChecked(Message):
    """`check` answered: the pre-flight summary of a run with the current settings."""

    report: dict[str, Any]


@dataclass
class EngineFailed(Message):
    """An engine sub-command refused or failed; `task` names what was being done."""

    task: str
    problem: str
    fix: str
