"""Shared tiny configs and float64 references for the model tests (imported as a module)."""

import math

import torch
from torch.nn import functional as F

from conan_core.masks.base import MaskContext
from conan_core.registries import REGISTRIES


def tiny_config(**overrides):
    from conan_core.model import ConanConfig

    kwargs = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, intermediate_size=96, max_position_embeddings=64)
    kwargs.update(overrides)
    return ConanConfig(**kwargs)


def build_mask(name, **fields):
    return REGISTRIES["masks"].build({"type": name, **fields})


def all_masks():
    return {"causal": build_mask("causal"), "bidirectional": build_mask("bidirectional"),
            "soft": build_mask("soft")}


def rms64(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def rope64(x, positions, theta):
    """RoPE written with complex numbers in float64: pair (d, d + D/2) is one complex coordinate
    rotated by ``position * theta ** (-2d / D)`` (independent of the model's rotate-half code)."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half], x[..., half:])
    freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    angle = positions.double()[..., None] * freq  # [B, L, D/2]
    z = z * torch.polar(torch.ones_like(angle), angle)[:, :, None, :]
    return torch.cat((z.real, z.imag), dim=-1)


def block_reference(block, x, matrix, positions, config):
    """One Conan block in float64 from its weights: explicit loops over query heads, each reading
    key/value head ``h // (Hq / Hkv)``, and weights ``M exp(s) / sum M exp(s)``.

    ``x`` [B, L, H]; ``matrix`` [B, L, L] mask values; ``positions`` [B, L]."""
    x = x.double()
    b, n, _ = x.shape
    hq, hkv, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    att = block.self_attn
    h = rms64(x, block.input_layernorm.weight, config.rms_norm_eps)
    q = (h @ att.q_proj.weight.double().T).view(b, n, hq, d)
    k = (h @ att.k_proj.weight.double().T).view(b, n, hkv, d)
    v = (h @ att.v_proj.weight.double().T).view(b, n, hkv, d)
    q, k = rope64(q, positions, config.rope_theta), rope64(k, positions, config.rope_theta)
    heads = []
    for head in range(hq):
        kv = head // (hq // hkv)
        s = torch.einsum("bid,bjd->bij", q[:, :, head], k[:, :, kv]) / math.sqrt(d)
        s = s.masked_fill(matrix == 0, -math.inf)
        w = matrix * torch.exp(s - s.amax(-1, keepdim=True))
        heads.append((w / w.sum(-1, keepdim=True)) @ v[:, :, kv])
    attn = torch.cat(heads, dim=-1) @ att.o_proj.weight.double().T
    x = x + attn
    h = rms64(x, block.post_attention_layernorm.weight, config.rms_norm_eps)
    mlp = block.mlp
    up = F.silu(h @ mlp.gate_proj.weight.double().T) * (h @ mlp.up_proj.weight.double().T)
    return x + up @ mlp.down_proj.weight.double().T


def context(lengths, seq_len, alpha=0.0, segment_ids=None):
    return MaskContext(lengths=torch.tensor(lengths), seq_len=seq_len, alpha=alpha, segment_ids=segment_ids)
