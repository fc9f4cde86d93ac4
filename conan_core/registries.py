"""Every registry and every built-in key: the one list (style rule 2: declare, don't register).

Each line maps a key to a lazy ``"module:Class"`` target; the key is the file name. Nothing here
imports a component: ``REGISTRIES[kind].get(key)`` does, on first use. A kind is one contract: its
base class's methods are what the trainer calls (losses are three kinds because they have three
call shapes).
"""

from __future__ import annotations

from conan_core.registry import Registry, RegistrySet


def _keys(package: str, classes: dict[str, str]) -> dict[str, str]:
    return {key: f"{package}.{key}:{cls}" for key, cls in classes.items()}


REGISTRIES: RegistrySet = RegistrySet({
    "masks": Registry("masks", "conan_core.masks.base:Mask", _keys("conan_core.masks", {
        "causal": "CausalMask",
        "bidirectional": "BidirectionalMask",
        "soft": "SoftMask",
        "document": "DocumentMask",
    }), "attention masks: a matrix M in [0,1] per (query, key), as SDPA bias or Flex score_mod"),
    "mask_schedules": Registry("mask_schedules", "conan_core.schedules.base:MaskSchedule", _keys("conan_core.schedules", {
        "constant": "ConstantSchedule",
        "linear": "LinearSchedule",
        "accelerating": "AcceleratingSchedule",
        "decelerating": "DeceleratingSchedule",
        "cosine": "CosineSchedule",
        "step": "StepSchedule",
    }), "alpha(step, total_steps) in [0, 1] driving the soft mask"),
    "attention": Registry("attention", "conan_core.ops.attention.base:AttentionBackend", _keys("conan_core.ops.attention", {
        "eager": "EagerAttention",
        "sdpa": "SDPAAttention",
        "flex": "FlexAttentionBackend",
    }), "attention kernels; every one is checked against the float64 eager reference"),
    "norms": Registry("norms", "conan_core.ops.norms.base:NormFactory", _keys("conan_core.ops.norms", {
        "torch": "TorchRMSNorm",
        "compiled": "CompiledRMSNorm",
    }), "RMSNorm implementations"),
    "backbones": Registry("backbones", "conan_core.backbones.base:Backbone", _keys("conan_core.backbones", {
        "conan": "ConanBackbone",
        "hf": "HFBackbone",
    }), "decoder LLMs that take a 4-D float attention mask"),
    "poolers": Registry("poolers", "conan_core.poolers.base:Pooler", _keys("conan_core.poolers", {
        "mean": "MeanPooler",
        "last_token": "LastTokenPooler",
        "first_token": "FirstTokenPooler",
        "weighted_mean": "WeightedMeanPooler",
        "latent_attention": "LatentAttentionPooler",
    }), "hidden states [B, L, H] -> embeddings [B, H]"),
    "lm_losses": Registry("lm_losses", "conan_core.losses.base:LMLoss", _keys("conan_core.losses", {
        "causal_lm": "CausalLMLoss",
    }), "next-token losses: forward(hidden [B,L,H], weight [V,H], labels [B,L])"),
    "contrastive_losses": Registry("contrastive_losses", "conan_core.losses.base:ContrastiveLoss",
                                   _keys("conan_core.losses", {
        "info_nce": "InfoNCELoss",
        "matryoshka": "MatryoshkaLoss",
        "cbb": "CBBLoss",
        "cached": "CachedLoss",
    }), "embedding losses: forward(query [B,H], positive [B,H], negatives [B,n,H] | None, *, query_ids, "
        "positive_ids, negative_ids)"),
    "pair_losses": Registry("pair_losses", "conan_core.losses.base:PairLoss", _keys("conan_core.losses", {
        "cosent": "CoSENTLoss",
    }), "scored-pair (STS) losses: forward(e1 [S,H], e2 [S,H], scores [S])"),
    "miners": Registry("miners", "conan_core.miners.base:Miner", _keys("conan_core.miners", {
        "static": "StaticMiner",
        "dynamic_v2": "DynamicV2Miner",
        "dynamic_v1": "DynamicV1Miner",
        "in_batch": "InBatchMiner",
    }), "hard-negative selection, static or dynamic (DHNM)"),
    "sources": Registry("sources", "conan_core.sources.base:Source", _keys("conan_core.sources", {
        "text_shards": "TextShards",
        "pair_shards": "PairShards",
        "sts_shards": "STSShards",
        "jsonl": "JSONLSource",
        "hf_dataset": "HFDatasetSource",
    }), "resumable, rank/worker-split sample streams"),
    "translators": Registry("translators", "conan_core.translators.base:Translator", _keys("conan_core.translators", {
        "lookup": "LookupTranslator",
        "gettext": "GettextTranslator",
    }), "query translation for cross-lingual retrieval data (never a network call)"),
    "optimizers": Registry("optimizers", "conan_core.optimizers.base:OptimizerFactory", _keys("conan_core.optimizers", {
        "adamw": "AdamW",
    }), "optimizers built from parameter groups"),
    "evaluators": Registry("evaluators", "conan_core.eval.base:Evaluator", _keys("conan_core.eval", {
        "retrieval": "RetrievalEvaluator",
        "sts": "STSEvaluator",
        "cross_lingual": "CrossLingualEvaluator",
        "classification": "ClassificationEvaluator",
    }), "metrics of an embedder, each next to a BM25 reference"),
    "trackers": Registry("trackers", "conan_core.trackers.base:Tracker", _keys("conan_core.trackers", {
        "jsonl": "JSONLTracker",
        "tensorboard": "TensorBoardTracker",
        "wandb": "WandbTracker",
    }), "where each stage's scalars go (report_to): metrics.jsonl, TensorBoard, W&B"),
}, retired={"losses": "lm_losses, contrastive_losses or pair_losses (the kind whose forward the key implements)"})


def registry(kind: str) -> Registry:
    """``REGISTRIES[kind]`` with an error that lists the kinds."""
    return REGISTRIES.kind(kind)
