"""The top block computes only the token the classification head reads (train.top_block_one_token).

A sequence classifier reads one position of the top block's output. Encoders read the first token
([CLS] / <s>): BERT's pooler, the RoBERTa and ELECTRA heads and DistilBERT's pre-classifier all take
`hidden_states[:, 0]`. LLaMA-family decoders, under transformers' generic classifier, read the
rightmost token that is not padding. Every other position of the top block is computed and thrown
away: its queries, attention, output projection, feed-forward and their backward. Here the top
block runs its queries on the read token alone while its keys and values still come from every
token, so the head sees the same numbers (up to float summation order) for about a sixth of the
block's matmul work. With 5 of 6 MiniLM blocks frozen and cached (train.prefix_cache) the top block
is nearly all of a step: epoch 2 drops from 0.43x to 0.17x of epoch 1 (bench prefix_cache).

    applied, why_not = install(model)   # (True, "") or (False, a reason); changes no parameter

The other positions leave the top block holding the block's input: nothing reads them. Models with
other attention (DeBERTa's relative positions, GPT-2's fused projection) keep the full block, and
so does a decoder batch without padding whose read token is not the last (no mask then stops it
from attending to later tokens). Dropout masks are drawn for one token, so the random stream
(never the expected result) differs from a run without this: exact resume records the setting.
"""

from __future__ import annotations

import sys
import types

import torch
import transformers
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from engine import freezing

# Attention modules whose forward is: q/k/v projections of one input, the configured attention
# function, reshape (DistilBERT: then its output projection). Matched by class name, since every
# family defines its own copy of the class.
ATTENTION_PROJECTIONS = {
    "BertSelfAttention": ("query", "key", "value", None),
    "RobertaSelfAttention": ("query", "key", "value", None),
    "XLMRobertaSelfAttention": ("query", "key", "value", None),
    "CamembertSelfAttention": ("query", "key", "value", None),
    "ElectraSelfAttention": ("query", "key", "value", None),
    "DistilBertSelfAttention": ("q_lin", "k_lin", "v_lin", "out_lin"),
}
# Pre-norm decoder blocks of the LLaMA layout (input_layernorm, self_attn with q/k/v/o_proj and
# rotary positions, post_attention_layernorm, mlp) under transformers' generic sequence classifier,
# which reads the last token that is not padding.
LAST_TOKEN_BLOCKS = ("LlamaDecoderLayer",)


def install(model: nn.Module) -> tuple[bool, str]:
    """Make the top block of `model` compute only the token its head reads, where that is exact."""
    if int(transformers.__version__.split(".")[0]) < 5:  # the forwards below mirror transformers 5's
        return False, f"transformers {transformers.__version__}: the top block runs in full (needs 5 or newer)"
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return False, f"{type(model).__name__} is not a sequence classifier"
    blocks_path = freezing._blocks_path(model, freezing._base_prefix(model))
    if blocks_path is None:
        return False, "no stack of blocks found"
    top = model.get_submodule(blocks_path)[-1]
    if type(top).__name__ in LAST_TOKEN_BLOCKS:
        _last_token_block(model, top)
        return True, ""
    attentions = [m for m in top.modules() if type(m).__name__ in ATTENTION_PROJECTIONS]
    if len(attentions) != 1 or getattr(attentions[0], "is_causal", False):
        return False, (f"{type(top).__name__}: only models whose head reads one known token (the BERT, "
                       f"RoBERTa, ELECTRA, DistilBERT and LLaMA families) get it")
    full_input: list[torch.Tensor | None] = [None]  # the top block's whole input, during its call
    _queries_from_first_token(attentions[0], full_input)
    _first_token_block(top, full_input)
    return True, ""


def _first_token_block(block: nn.Module, full_input: list) -> None:
    original = block.forward

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        full_input[0] = hidden_states
        try:
            out = original(hidden_states[:, :1], _first_query_row(attention_mask), *args, **kwargs)
        finally:
            full_input[0] = None
        first = out[0] if isinstance(out, tuple) else out
        merged = torch.cat([first, hidden_states[:, 1:].to(first.dtype)], dim=1)
        return (merged, *out[1:]) if isinstance(out, tuple) else merged

    block.forward = types.MethodType(forward, block)


def _first_query_row(mask):
    """A 4-d attention mask (batch, heads, queries, keys) cut to the first query's row."""
    if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[-2] > 1:
        return mask[:, :, :1, :]
    return mask


def _queries_from_first_token(attention: nn.Module, full_input: list) -> None:
    """The attention's forward with queries from its input (the first token) and keys and values
    from the block's whole input; otherwise the same steps as the family's own forward."""
    q_name, k_name, v_name, out_name = ATTENTION_PROJECTIONS[type(attention).__name__]
    eager = sys.modules[type(attention).__module__].eager_attention_forward  # the family's own
    original = attention.forward

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        everything = full_input[0]
        if everything is None or cache is not None:  # called outside the block, or generating
            return original(hidden_states, attention_mask=attention_mask, cache=cache, **kwargs)
        batch, head = hidden_states.shape[0], self.attention_head_size
        query = getattr(self, q_name)(hidden_states).view(batch, hidden_states.shape[1], -1, head)
        key = getattr(self, k_name)(everything).view(batch, everything.shape[1], -1, head)
        value = getattr(self, v_name)(everything).view(batch, everything.shape[1], -1, head)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager)
        output, weights = attend(self, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                 attention_mask, dropout=self.dropout.p if self.training else 0.0,
                                 scaling=self.scaling, **kwargs)
        output = output.reshape(batch, hidden_states.shape[1], -1).contiguous()
        if out_name:
            output = getattr(self, out_name)(output)
        return output, weights

    attention.forward = types.MethodType(forward, attention)


# ---------------------------------------------------------------- decoders: the last real token


def _last_token_block(model: nn.Module, block: nn.Module) -> None:
    """The top decoder block computes only the token the generic classifier reads: the rightmost
    token that is not padding, found from the input ids before the model runs, as the head does."""
    read: list[torch.Tensor | None] = [None]

    def find_read_tokens(module, args, kwargs):
        input_ids = args[0] if args else kwargs.get("input_ids")
        pad = module.config.get_text_config().pad_token_id
        if input_ids is None or pad is None:
            read[0] = None  # the head then reads position -1, or warns: leave the block whole
            return
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
        read[0] = (positions * (input_ids != pad).to(torch.int32)).argmax(-1)  # the head's own formula

    model.register_forward_pre_hook(find_read_tokens, with_kwargs=True)
    rotate = sys.modules[type(block.self_attn).__module__].apply_rotary_pos_emb
    eager = sys.modules[type(block.self_attn).__module__].eager_attention_forward
    original = block.forward

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None, **kwargs):
        tokens = read[0]
        if not _one_token_is_exact(tokens, hidden_states, attention_mask, cache, position_embeddings):
            return original(hidden_states, attention_mask, position_ids, cache, use_cache, position_embeddings,
                            **kwargs)
        rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
        tokens = tokens.long()
        attention = self.self_attn
        normed = self.input_layernorm(hidden_states)  # keys and values need every token's
        query = attention.q_proj(normed[rows, tokens].unsqueeze(1))
        key, value = attention.k_proj(normed), attention.v_proj(normed)
        batch, length, head = hidden_states.shape[0], hidden_states.shape[1], attention.head_dim
        query = query.view(batch, 1, -1, head).transpose(1, 2)
        key = key.view(batch, length, -1, head).transpose(1, 2)
        value = value.view(batch, length, -1, head).transpose(1, 2)
        cos, sin = (part.expand(batch, -1, -1) for part in position_embeddings)  # (1, length, dim) is shared
        query = rotate(query, query, cos[rows, tokens].unsqueeze(1), sin[rows, tokens].unsqueeze(1))[0]
        key = rotate(key, key, cos, sin)[1]
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
            attention_mask = attention_mask[rows, :, tokens].unsqueeze(2)  # the read token's row
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
        output, _ = attend(attention, query, key, value, attention_mask,
                           dropout=attention.attention_dropout if attention.training else 0.0,
                           scaling=attention.scaling, position_ids=position_ids, **kwargs)
        picked = hidden_states[rows, tokens].unsqueeze(1) + attention.o_proj(output.reshape(batch, 1, -1))
        picked = picked + self.mlp(self.post_attention_layernorm(picked))
        return hidden_states.index_put((rows, tokens), picked[:, 0].to(hidden_states.dtype))

    block.forward = types.MethodType(forward, block)


def _one_token_is_exact(tokens, hidden_states, attention_mask, cache, position_embeddings) -> bool:
    """Whether the read token alone gives the head its numbers. Not without the read positions, while
    generating, or when no mask exists (a batch without padding) to stop a read token before the
    last from attending to later ones."""
    if tokens is None or cache is not None or position_embeddings is None:
        return False
    if tokens.shape[0] != hidden_states.shape[0]:
        return False
    return attention_mask is not None or bool((tokens == hidden_states.shape[1] - 1).all())
