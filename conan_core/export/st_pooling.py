"""``ConanPooling``: a sentence-transformers module running any conan_core pooler.

The export uses sentence-transformers' own ``Pooling`` whenever it computes exactly what the
conan pooler does (mean, last token, first token, weighted mean without instruction exclusion).
Poolers with weights (``latent_attention``), plugin poolers, and ``weighted_mean`` with
``exclude_instruction`` (sentence-transformers keeps the original position weights after removing
the prompt; conan_core counts ranks among the pooled tokens) go through this module instead. It is
an old-style sentence-transformers module (``forward(features)``, ``save(path)``, static
``load(path)``), which every sentence-transformers version from 2.x on can load; it needs
conan_core installed, as does the Conan transformer itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pooler.safetensors"


#: conan pooler key -> sentence-transformers Pooling mode, where the two compute the same thing
ST_POOLING_MODES = {"mean": "mean", "last_token": "lasttoken", "first_token": "cls", "weighted_mean": "weightedmean"}


def sentence_transformers_pooling(pooler: dict) -> str | None:
    """The sentence-transformers Pooling mode equal to ``pooler``, or None (use ConanPooling)."""
    mode = ST_POOLING_MODES.get(pooler.get("type"))
    if mode == "weightedmean" and pooler.get("exclude_instruction"):
        return None
    return mode


class ConanPooling(nn.Module):
    """``features["token_embeddings"]`` [B, L, H] + ``attention_mask`` -> ``sentence_embedding`` [B, H].

    ``prompt_length`` (set by sentence-transformers when a prompt is used) marks the leading
    instruction tokens; they are left out of pooling when the pooler's ``exclude_instruction`` is on.
    """

    def __init__(self, pooler: dict[str, Any], hidden_size: int):
        super().__init__()
        from conan_core.registries import REGISTRIES

        self.pooler_spec = dict(pooler)
        self.hidden_size = int(hidden_size)
        self.pooler = REGISTRIES["poolers"].build(self.pooler_spec, "pooler", hidden_size=self.hidden_size)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden = features["token_embeddings"]
        attention = features.get("attention_mask")
        if attention is None:
            attention = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        pool_mask = attention.clone()
        prompt_length = features.get("prompt_length")
        if prompt_length is not None:
            n = int(prompt_length[0].item()) if isinstance(prompt_length, torch.Tensor) else int(prompt_length)
            pool_mask[:, :n] = 0
        features["sentence_embedding"] = self.pooler(hidden.float(), attention, pool_mask)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.hidden_size

    def get_embedding_dimension(self) -> int:
        return self.hidden_size

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        out = Path(output_path)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps({"pooler": self.pooler_spec, "hidden_size": self.hidden_size},
                                                  indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.pooler.state_dict().items()}
        if state:
            from safetensors.torch import save_file

            save_file(state, str(out / WEIGHTS_FILE))

    @staticmethod
    def load(input_path: str) -> "ConanPooling":
        path = Path(input_path)
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        module = ConanPooling(config["pooler"], config["hidden_size"])
        weights = path / WEIGHTS_FILE
        if weights.is_file():
            from safetensors.torch import load_file

            module.pooler.load_state_dict(load_file(str(weights)))
        return module
