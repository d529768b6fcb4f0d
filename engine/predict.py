"""Classifying texts with a trained model at inference speed, in bounded memory.

Texts are read in chunks (CHUNK_LINES at a time), tokenized once, sorted by token length so a
batch pads little, run in batches of at most MAX_BATCH_TOKENS padded tokens under
torch.inference_mode and the precision training would use (bf16 autocast where the hardware is
fast at it), and given back in input order, chunk after chunk: memory stays flat in the file's
length and results appear as they are ready. Every input gets one result, empty lines included
(marked skipped), with its position.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from engine import data, metrics, models
from engine.core.errors import FtwError
from engine.core.terminal import terminal_safe

CHUNK_LINES = 1024        # lines read, sorted and predicted together: bounds memory, not speed
MAX_BATCH_ROWS = 64
MAX_BATCH_TOKENS = 8192   # padded tokens in one forward pass (64 rows of 128 tokens)
SKIPPED_EMPTY = "empty line"


class Predictor:
    """A trained model folder, loaded once, that turns texts into class probabilities."""

    def __init__(self, model_dir: Path, max_length: int, precision: str = "auto"):
        import torch
        from transformers import AutoModelForSequenceClassification

        from engine.hardware import choose_precision

        from engine import adapters

        self.torch = torch
        if adapters.is_adapter_folder(model_dir):  # a peft folder (`ftw export --adapter`) on its base model
            self.tokenizer = models._tokenizer_at(str(model_dir), False)
            self.model, _ = adapters.load_adapter_model(model_dir)
        else:
            self.tokenizer = models.load_tokenizer(str(model_dir))
            with models._quiet_transformers():
                self.model = AutoModelForSequenceClassification.from_pretrained(
                    str(model_dir), use_safetensors=True, dtype=torch.float32)
        self.model.eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.max_length = min(max_length, getattr(config, "max_position_embeddings", None) or max_length)
        self.precision = choose_precision(precision)

    def _autocast(self):
        dtypes = {"bf16": self.torch.bfloat16, "fp16": self.torch.float16}
        if self.precision not in dtypes:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device, dtype=dtypes[self.precision])

    def logits(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        """fp32 logits, one row per text in input order; batches are formed in token-length order."""
        return self.logits_of(self.encode(texts, pairs))

    def logits_of(self, encoded) -> np.ndarray:
        """fp32 logits of inputs `encode` made, one row per input in order."""
        out = np.zeros((len(encoded["input_ids"]), len(self.labels)), dtype=np.float32)
        if not len(out):
            return out
        lengths = np.array([len(ids) for ids in encoded["input_ids"]])
        order = np.argsort(lengths, kind="stable")
        with self.torch.inference_mode(), self._autocast():
            for index in length_batches(order, lengths):
                batch = self._padded(encoded, index, int(lengths[index].max()))
                out[index] = self.model(**batch).logits.float().cpu().numpy()
        return out

    def encode(self, texts: list[str], pairs: list[str] | None = None):
        """The tokenizer's encoding of the inputs, as the model is given them (truncated to max_length)."""
        # Cut to what max_length tokens can cover: a tokenizer's memory grows with the text it is given.
        texts = data.clip_for_tokenizer(list(texts), self.max_length)
        pairs = data.clip_for_tokenizer(list(pairs), self.max_length) if pairs else None
        return self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)

    def probabilities(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        return metrics.softmax(self.logits(texts, pairs).astype(np.float64))

    def _padded(self, encoded, index: np.ndarray, width: int) -> dict[str, Any]:
        """Right-padded tensors of the rows `index` (pad id for tokens, 0 for masks and types)."""
        batch = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key not in encoded:
                continue
            fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
            array = np.full((len(index), width), fill, dtype=np.int64)
            for row, i in enumerate(index):
                values = encoded[key][i]
                array[row, :len(values)] = values
            batch[key] = self.torch.from_numpy(array).to(self.device)
        return batch


def length_batches(order: np.ndarray, lengths: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive runs of `order` (ascending lengths) of at most MAX_BATCH_ROWS rows and
    MAX_BATCH_TOKENS padded tokens (always at least one row)."""
    start = 0
    while start < len(order):
        end = start + 1
        while (end < len(order) and end - start < MAX_BATCH_ROWS
               and (end - start + 1) * lengths[order[end]] <= MAX_BATCH_TOKENS):
            end += 1
        yield order[start:end]
        start = end


@dataclass
class Item:
    """One input: its position among all inputs (0-based), its file line (1-based, None for an
    argument) and its text."""

    index: int
    line: int | None
    text: str


def items(arguments: Iterable[str], file_lines: Iterable[tuple[int, str]] = ()) -> Iterator[Item]:
    sources = itertools.chain(((None, text) for text in arguments), file_lines)
    for index, (line, text) in enumerate(sources):
        yield Item(index, line, text)


def predict_items(predictor: Predictor, inputs: Iterable[Item], chunk_lines: int = CHUNK_LINES) -> Iterator[dict]:
    """One result per input, in input order, computed chunk by chunk."""
    iterator = iter(inputs)
    while chunk := list(itertools.islice(iterator, chunk_lines)):
        texts = [item.text for item in chunk if item.text.strip()]
        probabilities = iter(predictor.probabilities(texts))
        for item in chunk:
            yield result(item, predictor.labels, next(probabilities) if item.text.strip() else None)


def result(item: Item, labels: list[str], probabilities: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": item.index}
    if item.line is not None:
        out["line"] = item.line
    out["text"] = item.text
    if probabilities is None:
        return {**out, "label": None, "confidence": None, "probabilities": None, "skipped": SKIPPED_EMPTY}
    best = int(probabilities.argmax())
    return {**out, "label": labels[best], "confidence": float(probabilities[best]),
            "probabilities": {label: float(p) for label, p in zip(labels, probabilities)}}


def read_lines(path_text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 text file ('-': standard input), streamed.
    Line ends are \\n, \\r\\n or \\r; a byte-order mark is dropped."""
    if path_text == "-":
        handle = open(sys.stdin.fileno(), encoding="utf-8-sig", closefd=False)
        name = "standard input"
    else:
        path = Path(path_text).expanduser()
        name = str(path)
        try:
            handle = open(path, encoding="utf-8-sig")
        except FileNotFoundError:
            raise FtwError(f"no such file: {path}", "give a text file with one text per line") from None
        except IsADirectoryError:
            raise FtwError(f"{path} is a folder, not a file", "give a text file with one text per line") from None
        except PermissionError:
            raise FtwError(f"cannot read {path}: permission denied", "give a file you can read") from None
    return _lines(handle, name)


def _lines(handle, name: str) -> Iterator[tuple[int, str]]:
    number = 0
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\n")
        except UnicodeDecodeError:
            raise FtwError(f"{name} is not UTF-8 text (line {number + 1})", "re-save it as UTF-8") from None


def human_line(prediction: dict[str, Any]) -> str:
    """number (1-based), label, confidence, text: tab-separated, safe to print to a terminal."""
    number = prediction.get("line", prediction["index"] + 1)
    if prediction["label"] is None:
        return f"{number}\t-\t-\t(skipped: {prediction['skipped']})"
    return f"{number}\t{terminal_safe(prediction['label'])}\t{prediction['confidence']:.3f}\t{terminal_safe(prediction['text'])}"
