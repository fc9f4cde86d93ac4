"""Latent-attention pooling (as in NV-Embed), key ``latent_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from conan_core.poolers.base import Pooler, PoolerInputError, masked_mean


class LatentAttentionPooler(Pooler):
    """Cross-attention from every token to a trainable latent array, an MLP, then the masked mean.

    For hidden states X [B, L, H] and latents Z [r, H] (``num_latents`` = r):
      ``A = X + W_o · MHA(q = W_q LN(X), k = W_k Z, v = W_v Z)``   (``num_heads`` heads)
      ``Y = A + MLP(LN(A))``   (H -> mlp_ratio·H -> H, GELU)
      ``out = masked mean of Y over the pooled tokens`` (empty rows -> 0).
    The tokens are the queries and the latents the keys/values, so the cost is linear in L.
    The pooler has parameters: the optimizer must include them (they are saved with the model's
    pooler). Runtime: ``hidden_size`` (required; divisible by ``num_heads``). Parameters are float32;
    inside an autocast region the linears run in the autocast dtype. See :class:`Pooler` for the
    rest of the contract (output float32 [B, H]).
    """

    class Config(Pooler.Config):
        num_latents: int = Field(512, gt=0, description="rows of the trainable latent array (NV-Embed: 512)")
        num_heads: int = Field(8, gt=0, description="attention heads (NV-Embed: 8)")
        mlp_ratio: int = Field(4, gt=0, description="MLP width as a multiple of hidden_size")

    def __init__(self, config: Config, *, hidden_size: int | None = None, **runtime):
        super().__init__(config, hidden_size=hidden_size, **runtime)
        if hidden_size is None or hidden_size <= 0:
            raise PoolerInputError("latent_attention: needs the runtime argument hidden_size (the backbone's "
                                   f"hidden size), got {hidden_size!r}")
        if hidden_size % config.num_heads:
            raise PoolerInputError(f"latent_attention: hidden_size {hidden_size} is not divisible by num_heads "
                                   f"{config.num_heads}; pick num_heads dividing it")
        h = hidden_size
        self.latents = nn.Parameter(torch.randn(config.num_latents, h) * 0.02)
        self.norm = nn.LayerNorm(h)
        self.to_q = nn.Linear(h, h, bias=False)
        self.to_k = nn.Linear(h, h, bias=False)
        self.to_v = nn.Linear(h, h, bias=False)
        self.to_out = nn.Linear(h, h)
        self.mlp_norm = nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(h, config.mlp_ratio * h), nn.GELU(), nn.Linear(config.mlp_ratio * h, h))

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, h = hidden.shape
        if h != self.hidden_size:
            raise PoolerInputError(f"latent_attention: built for hidden_size {self.hidden_size}, got hidden [.., {h}]")
        heads = self.config.num_heads
        x = hidden.to(self.latents.dtype)
        q = self.to_q(self.norm(x)).view(b, length, heads, h // heads).transpose(1, 2)  # [B, nh, L, hd]
        k = self.to_k(self.latents).view(-1, heads, h // heads).transpose(0, 1)  # [nh, r, hd]
        v = self.to_v(self.latents).view(-1, heads, h // heads).transpose(0, 1)
        k, v = (t.expand(b, -1, -1, -1).to(q.dtype) for t in (k, v))  # the latents are shared by every row
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.to_out(attn.transpose(1, 2).reshape(b, length, h))
        x = x + self.mlp(self.mlp_norm(x))
        return masked_mean(x, mask, binary=True)
