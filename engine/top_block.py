"""The top block computes only the first token (train.first_token_top_block).

An encoder's classification head reads one position of the top block's output: the first token
([CLS] / <s>) — BERT's pooler, the RoBERTa and ELECTRA heads and DistilBERT's pre-classifier all
take `hidden_states[:, 0]`. Every other position of the top block is computed and thrown away:
its queries, attention, output projection, feed-forward and their backward. Here the top block
runs its queries on the first token alone while its keys and values still come from every token,
so the head sees the same numbers (up to float summation order) for about a sixth of the block's
matmul work. With 5 of 6 MiniLM blocks frozen and cached (train.prefix_cache) the top block is
nearly all of a step: epoch 2 drops from 0.43x to 0.17x of epoch 1 (bench prefix_cache).

    applied, why_not = install(model)   # (True, "") or (False, a reason); changes no parameter

Positions after the first leave the top block holding the block's input: nothing reads them.
Decoders pool at the last real token, which moves with padding: they keep the full block, and so
do encoders with other attention (DeBERTa's relative positions).
Dropout masks are drawn for the first token only, so the random stream (never the expected result)
differs from a run without this: exact resume records the setting.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn

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


def install(model: nn.Module) -> tuple[bool, str]:
    """Make the top block of `model` compute only its first token, where that is exact."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return False, f"{type(model).__name__} is not a sequence classifier"
    blocks_path = freezing._blocks_path(model, freezing._base_prefix(model))
    if blocks_path is None:
        return False, "no stack of blocks found"
    top = model.get_submodule(blocks_path)[-1]
    attentions = [m for m in top.modules() if type(m).__name__ in ATTENTION_PROJECTIONS]
    if len(attentions) != 1 or getattr(attentions[0], "is_causal", False):
        return False, (f"{type(top).__name__}: only encoders whose head reads the first token "
                       f"(the BERT, RoBERTa, ELECTRA and DistilBERT families) get it")
    full_input: list[torch.Tensor | None] = [None]  # the top block's whole input, during its call
    _queries_from_first_token(attentions[0], full_input)
    _first_token_block(top, full_input)
    return True, ""


def _first_token_block(block: nn.Module, full_input: list) -> None:
    original = block.forward

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        full_input[0] = hidden_states
        try:
            out = original(hidden_states[:, :1], first_query_row(attention_mask), *args, **kwargs)
        finally:
            full_input[0] = None
        first = out[0] if isinstance(out, tuple) else out
        merged = torch.cat([first, hidden_states[:, 1:].to(first.dtype)], dim=1)
        return (merged, *out[1:]) if isinstance(out, tuple) else merged

    block.forward = types.MethodType(forward, block)


def first_query_row(mask):
    """A 4-d attention mask (batch, heads, queries, keys) cut to the first query's row."""
    if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[-2] > 1:
        return mask[:, :, :1, :]
    return mask


def _queries_from_first_token(attention: nn.Module, full_input: list) -> None:
    """The attention's forward with queries from its input (the first token) and keys and values
    from the block's whole input; otherwise the same steps as the family's own forward."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

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

