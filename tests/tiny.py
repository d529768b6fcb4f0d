"""Tiny real model folders for tests: a config small enough to build in milliseconds, its
randomly initialised weights (safetensors; decoders saved as causal LMs, encoders as base models) and the real MiniLM tokenizer, written with save_pretrained.

    from tests.tiny import tiny_model_dir
    folder = tiny_model_dir(tmp_path, "gpt2")

Every kind has 2 blocks, hidden size 32 and MiniLM's 30,522-token vocabulary. Encoders keep MiniLM's
[PAD]; decoders get a tokenizer like GPT-2's and LLaMA's: no pad token, an end-of-sequence token
([SEP]). The GPT-2 config has pad_token_id set (to eos); the LLaMA config has none, as GPT-2 and
LLaMA checkpoints usually ship, so engine.models must fill it in.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("bert", "distilbert", "roberta", "electra", "deberta-v2", "gpt2", "llama")
DECODER_KINDS = ("gpt2", "llama")
BLOCKS = 2
HIDDEN = 32
VOCAB = 30522          # MiniLM's vocabulary
MAX_POSITIONS = 512    # MiniLM's model_max_length
CLS, SEP = 101, 102    # MiniLM's [CLS] and [SEP]


def minilm_folder() -> Path:
    from engine.core import builtins

    return builtins.locate(builtins.model("builtin:minilm-l6"))


def tiny_config(kind: str):
    """A transformers config with BLOCKS blocks of width HIDDEN for `kind` (one of KINDS)."""
    import transformers as t

    bert_like = dict(hidden_size=HIDDEN, num_hidden_layers=BLOCKS, num_attention_heads=2,
                     intermediate_size=37, vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS)
    builders = {
        "bert": lambda: t.BertConfig(**bert_like),
        "roberta": lambda: t.RobertaConfig(**bert_like, pad_token_id=0),
        "electra": lambda: t.ElectraConfig(**bert_like, embedding_size=16),
        "deberta-v2": lambda: t.DebertaV2Config(**bert_like, relative_attention=True, position_buckets=16,
                                                norm_rel_ebd="layer_norm", pos_att_type=["p2c", "c2p"],
                                                position_biased_input=False),
        "distilbert": lambda: t.DistilBertConfig(dim=HIDDEN, n_layers=BLOCKS, n_heads=2, hidden_dim=37,
                                                 vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS),
        "gpt2": lambda: t.GPT2Config(n_embd=HIDDEN, n_layer=BLOCKS, n_head=2, vocab_size=VOCAB,
                                     n_positions=MAX_POSITIONS, bos_token_id=CLS, eos_token_id=SEP,
                                     pad_token_id=SEP),
        "llama": lambda: t.LlamaConfig(**bert_like, num_key_value_heads=1, bos_token_id=CLS,
                                       eos_token_id=SEP, pad_token_id=None),
    }
    if kind not in builders:
        raise ValueError(f"unknown tiny model kind {kind!r}; kinds are {', '.join(KINDS)}")
    return builders[kind]()


def tiny_model_dir(tmp_path, kind: str) -> Path:
    """Write a tiny `kind` model (config, safetensors weights, MiniLM tokenizer) to tmp_path/<kind>."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    folder = Path(tmp_path) / f"tiny-{kind}"
    if (folder / "config.json").is_file():
        return folder
    from transformers.utils import logging as hf_logging

    config = tiny_config(kind)
    torch.manual_seed(0)
    builder = AutoModelForCausalLM if kind in DECODER_KINDS else AutoModel
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars only clutter test output
    try:
        builder.from_config(config).save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    if kind in DECODER_KINDS:
        tokenizer.pad_token = None
        tokenizer.eos_token = "[SEP]"
    tokenizer.save_pretrained(folder)
    return folder
