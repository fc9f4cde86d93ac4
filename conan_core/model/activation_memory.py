"""Activation memory of a Conan decoder's forward pass: what autograd keeps for backward.

The count is by tensor, from what each op of a block saves (checked exactly against
``torch.autograd.graph.saved_tensors_hooks`` on CPU in ``tests/model/test_activation_memory.py``):

* per block and token, fp32 (``precision: fp32``): the RMSNorm input, its ``rsqrt`` and the
  normalised values, and its output (the q/k/v input), twice (attention and MLP norms); the rotated
  query and key, the value, the attention output (also the o_proj input) and its log-sum-exp per
  head; the SwiGLU gate, up, SiLU and product. In elements:
  ``6 h + 2 + 2 Hq*D + 2 Hkv*D + Hq + 4 I``, times 4 bytes;
* per block and token, bf16 autocast: the norms' internals stay fp32 (``2 h + 1`` each) and every
  linear layer saves its own bf16 copy of its input (q, k and v each; gate and up each), the rest
  is bf16 except the fp32 log-sum-exp: ``(8 h + 4) * 2 + 2 h * 5 + 2 (2 Hq*D + 2 Hkv*D) + 4 Hq + 8 I``
  bytes; autocast also keeps a bf16 copy of every linear weight per forward (per micro-batch, not
  per token);
* per token outside the blocks: the token ids (8 bytes), the RoPE cos/sin tables (``2 D``
  elements), the final norm's input, ``rsqrt`` and normalised values (``2 h + 1`` fp32); a mask
  applied as a dense bias (a soft mask mid-schedule, padding) adds one fp32 ``L x L`` bias per
  sequence, shared by every block and head (``4 L`` bytes per token). No ``L x L`` term per block:
  the fused kernels (SDPA flash / efficient, FlexAttention) keep the log-sum-exp, not the
  probabilities; the ``eager`` backend is not counted here.
* with activation checkpointing (``model.gradient_checkpointing``; blocks 0, n, 2n, ... with
  ``model.checkpoint_every`` = n) a checkpointed block keeps only its input (fp32, the residual
  stream) and recomputes the rest in backward, so the peak adds one block's activations to what
  the forward kept.

Left out: the LM head / loss (the chunked cross-entropy holds ``chunk_size x vocab`` logits at a
time), the loss's similarity matrices (small next to the encoder), allocator slack and the
optimizer step's temporaries.
"""

from __future__ import annotations

from typing import Any

from conan_core.errors import ConanError
from conan_core.model.sizes import parameter_breakdown, resolve_architecture

ACTIVATION_DTYPES = ("fp32", "bf16")


def block_bytes_per_token(arch: Any, dtype: str = "bf16") -> int:
    """Bytes one decoder block keeps for backward per token (no checkpointing); see the module
    docstring for the tensors counted."""
    h, q_width, kv_width, heads, ffn = _widths(arch)
    if dtype == "fp32":
        return 4 * (6 * h + 2 + 2 * q_width + 2 * kv_width + heads + 4 * ffn)
    if dtype == "bf16":
        norms = 2 * (4 * (2 * h + 1))        # two norms: input, rsqrt, normalised (fp32)
        linear_inputs = 5 * 2 * h            # bf16 copies for q, k, v, gate, up
        attention = 2 * (2 * q_width + 2 * kv_width) + 4 * heads  # rotated q, k, v, output; fp32 lse
        return norms + linear_inputs + attention + 2 * 4 * ffn
    raise ConanError(f"activation memory: dtype must be one of {', '.join(ACTIVATION_DTYPES)} (got {dtype!r})")


def activation_plan(arch: Any, batch: int, seq_len: int, dtype: str = "bf16", *,
                    checkpointing: bool = False, checkpoint_every: int = 1,
                    dense_bias: bool = False) -> dict[str, int]:
    """Activation bytes of one forward of ``batch`` sequences of ``seq_len`` tokens (padded).

    With ``checkpointing``, blocks 0, n, 2n, ... (n = ``checkpoint_every``) keep only their input
    and the others everything. Returns ints: ``saved`` (what the forward keeps for backward),
    ``peak`` (``saved`` plus, with checkpointing, one block recomputed in backward), ``per_block``
    (one block, all tokens), ``outside_blocks``, ``weight_copies`` (autocast's bf16 weight copies
    of the blocks whose activations are kept; 0 in fp32) and ``checkpointed_blocks``.
    """
    if dtype not in ACTIVATION_DTYPES:
        raise ConanError(f"activation memory: dtype must be one of {', '.join(ACTIVATION_DTYPES)} (got {dtype!r})")
    if batch < 1 or seq_len < 1:
        raise ConanError(f"activation memory: batch and seq_len must be >= 1 (got {batch}, {seq_len})")
    a = resolve_architecture(arch)
    h, _, _, heads, _ = _widths(a)
    head_dim = int(a.get("head_dim") or h // heads)
    layers = int(a["num_hidden_layers"])
    tokens = batch * seq_len
    rope = 2 * head_dim * (4 if dtype == "fp32" else 2)
    outside = tokens * (8 + rope + 4 * (2 * h + 1)) + (4 * tokens * seq_len if dense_bias else 0)
    per_block = tokens * block_bytes_per_token(a, dtype)
    if checkpoint_every < 1:
        raise ConanError(f"activation memory: checkpoint_every must be >= 1 (got {checkpoint_every})")
    sizes = parameter_breakdown(a)
    copies_per_block = 0 if dtype == "fp32" else 2 * (sizes["attention"] + sizes["mlp"])
    checkpointed = len(range(0, layers, checkpoint_every)) if checkpointing else 0
    kept = layers - checkpointed
    # a checkpointed block keeps its input (the fp32 residual stream); the others keep everything
    saved = outside + checkpointed * tokens * 4 * h + kept * (per_block + copies_per_block)
    peak = saved + (per_block + copies_per_block if checkpointed else 0)
    return {"saved": saved, "peak": peak, "per_block": per_block, "outside_blocks": outside,
            "weight_copies": kept * copies_per_block, "tokens": tokens, "layers": layers,
            "checkpointed_blocks": checkpointed}


def _widths(arch: Any) -> tuple[int, int, int, int, int]:
    """(hidden, query width Hq*D, key/value width Hkv*D, query heads, intermediate size)."""
    a = resolve_architecture(arch)
    h, heads = int(a["hidden_size"]), int(a["num_attention_heads"])
    kv_heads = int(a.get("num_key_value_heads") or heads)
    head_dim = int(a.get("head_dim") or h // heads)
    return h, heads * head_dim, kv_heads * head_dim, heads, int(a["intermediate_size"])
