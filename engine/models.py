"""Model sources: resolve a builtin, local folder or hub id; load tokenizers and classifiers; inspect.

Weights are read only from safetensors, or from .bin through torch's weights_only loading
(transformers' default; we pass weights_only=True explicitly and never anything that disables it).
Code shipped with a model runs only when trust_remote_code is asked for.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.core import builtins
from engine.core.durable import fsync_dir
from engine.core.errors import FtwError
from engine.core.locations import looks_like_path, usable_cache_dir

ENCODER, DECODER = "encoder", "decoder"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
ENCODER_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "electra",
                 "deberta", "deberta-v2", "albert", "mpnet", "modernbert", "ernie", "nomic_bert",
                 "megatron-bert", "mobilebert", "squeezebert", "funnel", "longformer", "big_bird", "xlnet"}
DECODER_TYPES = {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen3",
                 "phi", "phi3", "gemma", "gemma2", "gemma3_text", "falcon", "opt", "bloom", "olmo", "olmo2",
                 "smollm3", "granite", "stablelm", "starcoder2", "codegen"}
BUILTIN_HINT = "builtin:minilm-l6 or builtin:smollm2-135m"
HUB_FIX = "use a local model folder or a builtin (" + BUILTIN_HINT + ")"


@dataclass
class ModelInfo:
    source: str
    family: str          # "encoder" | "decoder"
    model_type: str
    parameters: int
    blocks: int
    hidden_size: int
    max_positions: int
    vocab_size: int
    path: str            # resolved local folder or hub id

    def to_dict(self) -> dict:
        return asdict(self)


# --- resolving sources -----------------------------------------------------------------------


def resolve(source: str) -> str:
    """A local folder (validated) or a hub id for a model source; builtins are located or converted."""
    source = source.strip()
    if builtins.is_builtin(source):
        return str(_resolve_builtin(source))
    path = Path(source).expanduser()
    if path.is_dir():
        _validate_folder(path)
        return str(path.resolve())
    if path.exists():
        raise FtwError(f"model source {source} is a file, not a model folder",
                       "point model.source at the folder holding config.json, the weights and the tokenizer")
    if looks_like_path(source):
        raise FtwError(f"no such folder: {source}",
                       "check the path (relative paths count from the session file's folder), or use " + BUILTIN_HINT)
    _validate_hub_id(source)
    return source


def _resolve_builtin(source: str) -> Path:
    builtin = builtins.model(source)
    located = builtins.locate(builtin)
    if located.suffix != ".gguf":
        return located
    target = builtins.converted_folder(builtin)
    if not builtins.is_converted(builtin):
        usable_cache_dir()  # a file where the cache should be is named, not a NotADirectoryError
        _convert_gguf(located, target, builtin)
    return target


def _validate_hub_id(source: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        raise FtwError(f"model source '{source}' is not a builtin, an existing folder or a hub id",
                       "write a folder path, a hub id such as org/model, or builtin:minilm-l6") from None


def _validate_folder(folder: Path) -> None:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json, or tokenizer_config.json with its vocab)")
    if missing:
        raise FtwError(f"model folder {folder} lacks " + ", ".join(missing),
                       "save the model and its tokenizer there with save_pretrained, or " + HUB_FIX)


def _is_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f and f.upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _require_reachable(path: str) -> None:
    """A hub id that is neither cached nor downloadable while offline gets a clear error up front."""
    if Path(path).is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    if _is_offline() and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise FtwError(f"model '{path}' is not in the local Hugging Face cache and the hub is unreachable (offline)",
                       HUB_FIX)


# --- the builtin GGUF decoder ----------------------------------------------------------------


def _convert_gguf(gguf: Path, target: Path, builtin: builtins.Builtin) -> None:
    """Dequantise the packaged GGUF once into a safetensors folder; atomic, safe against a race.

    A GGUF-loaded model refuses save_pretrained (it carries a quantization config), so the
    weights move into a plain model built from the same config, which saves normally.
    """
    if importlib.util.find_spec("gguf") is None:
        raise FtwError(f"builtin:{builtin.name} needs the 'gguf' package to read its weights",
                       "install it: pip install gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_converted(gguf, staging)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_converted(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = copy.deepcopy(quantized.config)
        del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
        del quantized
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    marker = {"from": gguf.name, "bytes": gguf.stat().st_size, "transformers": _transformers_version()}
    (folder / builtins.CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _publish(staging: Path, target: Path) -> None:
    """fsync the files, then rename the folder into place; if another process won the race, keep theirs."""
    for file in staging.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / builtins.CONVERSION_MARKER).is_file():
            raise FtwError(f"{target} exists but is not a complete conversion",
                           f"delete the folder {target} and try again") from None
    fsync_dir(target.parent)



def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# --- loading ---------------------------------------------------------------------------------


def load_tokenizer(source: str, trust_remote_code: bool = False):
    """The source's tokenizer, padding on the right, with a pad token (eos when it has none)."""
    path = resolve(source)
    _require_reachable(path)
    return _tokenizer_at(path, trust_remote_code)


def _tokenizer_at(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    with _translated_errors(path), _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise FtwError(f"the tokenizer of {path} has neither a pad nor an end-of-sequence token",
                           "add a pad_token to its tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token  # decoders (GPT-2, LLaMA) ship without one
    tokenizer.padding_side = "right"
    return tokenizer


def load_for_classification(source: str, labels: list[str], trust_remote_code: bool = False):
    """A sequence classifier over `labels` (fp32 weights, fresh head where the checkpoint has none)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    labels = _checked_labels(labels)
    path = resolve(source)
    _require_reachable(path)
    config = _config_at(path, trust_remote_code, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    if config.pad_token_id is None:  # GPT-2/LLaMA classify at the last non-pad token: they need it
        config.pad_token_id = _tokenizer_at(path, trust_remote_code).pad_token_id
    saved = saved_head_labels(path, trust_remote_code)
    new_head = saved is not None and len(saved) != len(labels)   # see head_notice
    with _translated_errors(path), _quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, trust_remote_code=trust_remote_code, dtype=torch.float32,
            weights_only=True, output_loading_info=True, ignore_mismatched_sizes=new_head)
    _check_body_loaded(model, info, path)
    _check_only_head_resized(model, info, path)
    model.config.use_cache = False  # a classifier never generates: no key/value cache to fill every forward
    return model


def saved_head_labels(source: str, trust_remote_code: bool = False) -> list[str] | None:
    """The labels of the classification head saved in a folder (an ftw export, a fine-tuned
    classifier); None when it holds a base model, whose head is new anyway."""
    config = _config_at(resolve(source), trust_remote_code)
    if not any(str(name).endswith("ForSequenceClassification") for name in config.architectures or ()):
        return None
    return [str(config.id2label.get(i, i)) for i in range(config.num_labels)]


def head_notice(source: str, labels: list[str], trust_remote_code: bool = False) -> str:
    """What happens to a saved classification head trained for other labels, for check and the
    run's log: another label count means a new head (the body is kept); the same count under other
    names means the head is reused, class by class in label order. "" when nothing is to be said."""
    saved = saved_head_labels(source, trust_remote_code)
    if saved is None or saved == list(labels):
        return ""
    before, now = _label_list(saved), _label_list(labels)
    if len(saved) != len(labels):
        return (f"the model's classification head was trained for {len(saved)} labels ({before}); the data has "
                f"{len(labels)} ({now}): the head starts fresh from the seed, the rest of the model is kept")
    return (f"the model's classification head was trained for the labels {before}; it is reused for the "
            f"data's {now} in that order (to start the head fresh instead, give a model without one)")


def _label_list(labels: list[str], limit: int = 6) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f", … ({len(labels) - limit} more)" if len(labels) > limit else "")


def _check_only_head_resized(model, info: dict, path: str) -> None:
    """A new head may take other shapes than the saved one; any other weight may not."""
    from engine.freezing import HEAD, group_of_parameters

    mismatched = [str(entry[0]) for entry in info.get("mismatched_keys") or ()]
    if not mismatched:
        return
    try:
        groups = group_of_parameters(model)
    except FtwError:
        groups = {}
    body = sorted(name for name in mismatched if groups.get(name, HEAD) != HEAD)
    if body:
        raise FtwError(f"{path}: the weights of {body[0]} do not fit the model's config ({len(body)} such)",
                       "check that config.json belongs to these weights, or save the model again with save_pretrained")


def _checked_labels(labels) -> list[str]:
    labels = [str(label) for label in labels]
    if len(labels) < 2:
        raise FtwError(f"a classifier needs at least two labels, got {labels}",
                       "check data.label_column: it should hold two or more distinct values")
    if len(set(labels)) != len(labels):
        raise FtwError(f"labels repeat: {labels}", "pass each label once")
    return labels


def _check_body_loaded(model, info: dict, path: str) -> None:
    """Missing embedding or block weights mean the body would train from random: refuse."""
    from engine.freezing import EMBEDDINGS, group_of_parameters

    missing = set(info.get("missing_keys") or ())
    if not missing:
        return
    try:
        groups = group_of_parameters(model)
    except FtwError:  # no recognisable block stack: nothing finer to check than transformers did
        return
    body = sorted(name for name in missing if groups.get(name) == EMBEDDINGS or
                  groups.get(name, "").startswith("block."))
    if body:
        raise FtwError(f"{path} lacks weights for {len(body)} parameters of the model body (e.g. {body[0]})",
                       "check that the folder holds the full pretrained weights saved with save_pretrained")


def _config_at(path: str, trust_remote_code: bool, **overrides):
    from transformers import AutoConfig

    with _translated_errors(path), _quiet_transformers():
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **overrides)


# --- inspecting ------------------------------------------------------------------------------


def inspect(source: str, trust_remote_code: bool = False) -> ModelInfo:
    """What a model is, from its config; the parameter count comes from a weightless (meta) build."""
    path = resolve(source)
    _require_reachable(path)
    config = _config_at(path, trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelInfo(
        source=source, family=model_family(config), model_type=config.model_type,
        parameters=_count_parameters(config, path, trust_remote_code),
        blocks=int(getattr(text, "num_hidden_layers", 0) or 0),
        hidden_size=int(getattr(text, "hidden_size", 0) or 0),
        max_positions=int(getattr(text, "max_position_embeddings", 0) or 0),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
        path=path)


def model_family(config) -> str:
    """"decoder" for causal LMs (GPT-2, LLaMA, …), "encoder" for BERT-like models."""
    model_type = getattr(config, "model_type", "")
    if model_type in ENCODER_TYPES:
        return ENCODER
    if model_type in DECODER_TYPES:
        return DECODER
    architectures = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    if not getattr(config, "is_encoder_decoder", False) and (causal or getattr(config, "is_decoder", False)):
        return DECODER
    return ENCODER


def _count_parameters(config, path: str, trust_remote_code: bool) -> int:
    import torch
    from transformers import AutoModel

    with _translated_errors(path), _quiet_transformers(), torch.device("meta"):
        skeleton = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in skeleton.parameters())


# --- listing ---------------------------------------------------------------------------------


def cached_hub_models(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Model repo ids in the local Hugging Face hub cache (the default cache unless one is given)."""
    from huggingface_hub import scan_cache_dir

    try:
        cache = scan_cache_dir(cache_dir)
    except Exception:  # no cache folder, or one we cannot read: nothing to offer
        return []
    return sorted(repo.repo_id for repo in cache.repos if repo.repo_type == "model")


def list_builtin_models() -> list[dict]:
    return [{"name": f"builtin:{name}", "description": builtin.description,
             "installed": _installed(builtin), "install": builtin.install}
            for name, builtin in builtins.MODELS.items()]


def _installed(builtin: builtins.Builtin) -> bool:
    try:
        builtins.locate(builtin)
    except FtwError:
        return False
    return True


# --- transformers plumbing -------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers():
    """Hide load reports and progress bars: a fresh head is expected, and we check the body ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _translated_errors(path: str):
    """Turn transformers' loading errors into FtwErrors that name the fix."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError:
        raise FtwError(f"refused to load the weights in {path}: the .bin file holds more than plain tensors,"
                       " and unpickling it could run code", "use a safetensors copy of the model") from None
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise _explain(err, path) from err


def _explain(err: Exception, path: str) -> FtwError:
    text = str(err)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    lowered = text.lower()
    if "trust_remote_code" in lowered:
        return FtwError(f"{path} ships its own model code, which runs only when trusted",
                        "set model.trust_remote_code = true if you trust this source")
    if "connect" in lowered or "offline" in lowered or "not a valid model identifier" in lowered:
        return FtwError(f"could not fetch '{path}' from the Hugging Face hub: it is unreachable or has no such model",
                        HUB_FIX)
    if "unrecognized configuration class" in lowered:
        return FtwError(f"{path}: this kind of model has no sequence-classification version in transformers",
                        "pick an encoder (BERT-like) or a decoder (GPT-2, LLaMA-like) model")
    if "unrecognized model" in lowered or "does not recognize" in lowered or isinstance(err, KeyError):
        return FtwError(f"{path}: transformers {_transformers_version()} does not know this model type ({first})",
                        "upgrade transformers, or set model.trust_remote_code = true if the model ships its code")
    if isinstance(err, ImportError):
        return FtwError(f"loading {path} needs a missing package: {first}", "install the package it names")
    return FtwError(f"could not load the model at {path}: {first}",
                    "check that the folder was written by save_pretrained (config.json, weights, tokenizer)")
