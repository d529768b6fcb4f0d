"""The prediction browser's view: filter by gold / predicted class and errors, sort, export.

Pure functions over the rows of predictions.jsonl, so the browser and its tests share them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SORTS = {
    "file order": None,
    "confidence ↑": ("confidence", False),
    "confidence ↓": ("confidence", True),
    "loss ↓": ("loss", True),
}
EXPORT_FIELDS = ("index", "gold", "predicted", "confidence", "loss", "text", "text_pair")
EXPORT_STEM = "predictions-view"


@dataclass(frozen=True)
class ViewSettings:
    gold: str | None = None
    predicted: str | None = None
    only_errors: bool = False
    sort: str = "file order"


def view(rows: list[dict[str, Any]], settings: ViewSettings) -> list[dict[str, Any]]:
    chosen = [row for row in rows if _keeps(row, settings)]
    sort = SORTS.get(settings.sort)
    if sort:
        key, descending = sort
        chosen.sort(key=lambda row: _number(row.get(key)), reverse=descending)
    return chosen


def _keeps(row: dict[str, Any], settings: ViewSettings) -> bool:
    gold, predicted = str(row.get("gold")), str(row.get("predicted"))
    if settings.gold is not None and gold != settings.gold:
        return False
    if settings.predicted is not None and predicted != settings.predicted:
        return False
    return not settings.only_errors or gold != predicted


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def labels_of(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({str(row.get("gold")) for row in rows} | {str(row.get("predicted")) for row in rows})


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """`stem.suffix`, or `stem-2.suffix`, `stem-3.suffix` … : the first name not taken."""
    path, number = folder / f"{stem}{suffix}", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}{suffix}"
    return path


def export(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the view as CSV or JSONL (by the file's suffix), atomically; never over a file
    that is there (an earlier export): the file is created exclusively, or the call fails."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        if path.suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    try:
        os.link(tmp, path)  # fails if the name was taken meanwhile, where a rename would replace it
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: the check and the rename, not one step
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
