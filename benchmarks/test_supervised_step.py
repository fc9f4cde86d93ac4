"""A supervised-stage training step on the demo's real lengths: packed batches against the usual stack.

Batches are built the way the supervised stage builds them, from the demo corpus (``build_demo`` at
scale 0.1, real docstring queries and documents) and a 2000-token tokenizer trained on it, as in
``tiny``: 8 queries, their positives and 7 negatives each (other queries' documents), cut at
``max_length`` 96. One step = forward, the Matryoshka InfoNCE loss (dims 16/32/64), backward,
gradient clipping and an AdamW step. Three rows from the same weights, timed in interleaved rounds
(``interleave.py``: ABBA order, warm-up excluded):

* ``packed``: :class:`~conan_core.train.objectives.EmbeddingObjective` with ``packing=True`` (one
  forward over rows of the batch's longest sequence, block-diagonal attention, mean pooling per
  sequence);
* ``padded``: the same objective with ``packing=False`` (three padded forwards, the earlier path);
* ``llama``: the usual way, the anchor: transformers' ``LlamaModel`` with SDPA and the identical
  config and weights, one padded forward per column (as sentence-transformers encodes query,
  positive and negative columns), mean pooling over the attention mask, the same loss module.

All three use the causal mask, so they compute the same function; before timing, the three losses
are checked against each other. The rate is useful (non-padding) tokens per second, the same
count for every row, so ``packed_over_llama`` (per-round ``t_llama / t_packed``, target >= 1.3)
is the speed-up. Also stored: ``packed_over_padded`` and the padding share of the padded batches.
``CONAN_BENCH_FULL=1``: the ``small`` architecture.
"""

from __future__ import annotations

import os
import random

import pytest
import torch
import torch._dynamo

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
ARCH_NAME = "small" if FULL else "tiny"
QUERIES, NEGATIVES, MAX_LENGTH = 8, 7, 96
ROUNDS = 8 if FULL else 12


@pytest.fixture(scope="module")
def real_batch(tmp_path_factory):
    """One supervised-shaped batch of real demo text: ``(query, positive, negative)`` padded dicts."""
    from conan_core.data.demo import build_demo
    from conan_core.tokenizer import load_tokenizer, train_tokenizer
    from conan_core.tokenizer.text import iter_shard_dir
    from conan_core.train.collate import pad_rows

    root = tmp_path_factory.mktemp("demo")
    build_demo(root / "data", scale=0.1)
    train_tokenizer([root / "data" / "pretrain"], 2000, root / "tok", progress=False)
    tok = load_tokenizer(root / "tok")
    pairs = [s for s in iter_shard_dir(root / "data" / "supervised") if s.get("task", "retrieval") == "retrieval"]
    rng = random.Random(0)
    chosen = rng.sample(pairs, QUERIES)
    others = [s for s in pairs if s not in chosen]

    def ids(text: str) -> list[int]:
        return tok(text, truncation=True, max_length=MAX_LENGTH)["input_ids"]

    query = pad_rows([ids(s["query"]) for s in chosen], 0)
    positive = pad_rows([ids(s["pos"]) for s in chosen], 0)
    negative = pad_rows([ids(s["pos"]) for s in rng.sample(others, QUERIES * NEGATIVES)], 0)
    return query, positive, negative


def loss_module():
    from conan_core.registries import REGISTRIES

    return REGISTRIES["contrastive_losses"].build({"type": "matryoshka", "loss": {"type": "info_nce"},
                                                   "dims": [16, 32, 64]})


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class LlamaEmbedding(torch.nn.Module):
    """The usual stack: transformers' LlamaModel (SDPA), padded columns, mean pooling, the loss."""

    def __init__(self, llama: torch.nn.Module):
        super().__init__()
        self.llama = llama
        self.loss = loss_module()

    def forward(self, batch: tuple[dict, dict, dict]) -> torch.Tensor:
        embs = [mean_pool(self.llama(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state,
                          x["attention_mask"]) for x in batch]
        q, p, n = embs
        return self.loss(q, p, n.view(q.shape[0], -1, q.shape[-1])).loss


def step_fn(module: torch.nn.Module, loss_of) -> callable:
    from conan_core.registries import REGISTRIES

    params = [p for p in module.parameters() if p.requires_grad]
    opt = REGISTRIES["optimizers"].build({"type": "adamw"}).build(
        [(n, p) for n, p in module.named_parameters() if p.requires_grad], 1e-4, 0.001)

    def step() -> float:
        loss = loss_of()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def test_packed_supervised_step_vs_llama(benchmark, interleave, real_batch):
    from transformers import LlamaModel

    from conan_core.model import ARCHITECTURES, ConanConfig, ConanForCausalLM
    from conan_core.model.compile import compile_blocks
    from conan_core.model.llama import to_llama_config
    from conan_core.registries import REGISTRIES
    from conan_core.train.objectives import EmbeddingObjective

    query, positive, negative = real_batch
    config = ConanConfig(**ARCHITECTURES[ARCH_NAME])
    torch.manual_seed(0)
    base = ConanForCausalLM(config)
    mask = REGISTRIES["masks"].build({"type": "causal"})
    objectives = {}
    for name, packing in (("packed", True), ("padded", False), ("compiled", True)):
        model = ConanForCausalLM(config).train()
        model.load_state_dict(base.state_dict())
        if name == "compiled":
            # compiled code of other suites in this process (another architecture's blocks) would
            # make this compile dynamic-shaped after a recompile: start from a clean cache
            torch._dynamo.reset()
            compile_blocks(model)
        objectives[name] = EmbeddingObjective(model, REGISTRIES["poolers"].build({"type": "mean"}), mask,
                                              loss_module(), packing=packing)
    llama = LlamaModel(to_llama_config(config, attn_implementation="sdpa")).train()
    llama.load_state_dict({k[len("model."):]: v for k, v in base.state_dict().items() if k.startswith("model.")})
    anchor = LlamaEmbedding(llama)

    ids = {"query_ids": torch.arange(QUERIES), "positive_ids": torch.arange(QUERIES),
           "negative_ids": torch.arange(QUERIES * NEGATIVES).view(QUERIES, NEGATIVES) + QUERIES,
           "example_ids": [str(i) for i in range(QUERIES)]}
    batch = {"query": query, "positive": positive, "negative": negative, **ids}
    rows = {"packed": step_fn(objectives["packed"], lambda: objectives["packed"](batch, step=0, alpha=0.0)["loss"]),
            "padded": step_fn(objectives["padded"], lambda: objectives["padded"](batch, step=0, alpha=0.0)["loss"]),
            "compiled": step_fn(objectives["compiled"],
                                lambda: objectives["compiled"](batch, step=0, alpha=0.0)["loss"]),
            "llama": step_fn(anchor, lambda: anchor((query, positive, negative)))}
    # the same function: equal losses on the first two steps (same weights, same optimizer)
    for _ in range(2):
        losses = {name: fn() for name, fn in rows.items()}
        for name in ("packed", "padded", "compiled"):
            assert abs(losses[name] - losses["llama"]) < 1e-3 * max(1.0, abs(losses["llama"])), losses

    rounds = benchmark.pedantic(interleave.interleave, args=(rows,),
                                kwargs={"rounds": ROUNDS, "warmup": 0, "inner": 3, "reduce": "min"},
                                rounds=1, iterations=1)  # the two checked steps above were the warm-up
    useful = sum(int(x["attention_mask"].sum()) for x in (query, positive, negative))
    padded_tokens = sum(x["input_ids"].numel() for x in (query, positive, negative))
    medians = rounds.medians()
    info = benchmark.extra_info
    info.update(architecture=ARCH_NAME, threads=torch.get_num_threads(), useful_tokens=useful,
                padded_tokens=padded_tokens, padding_share=round(1 - useful / padded_tokens, 4),
                useful_tokens_per_s={name: useful / t for name, t in medians.items()}, medians_s=medians)
    stats = {"packed_over_llama": rounds.ratio("llama", "packed"),
             "compiled_over_llama": rounds.ratio("llama", "compiled"),
             "packed_over_padded": rounds.ratio("padded", "packed"),
             "padded_over_llama": rounds.ratio("llama", "padded")}
    for key, value in stats.items():
        interleave.record(info, key, value)
    print(f"\nsupervised step ({ARCH_NAME}, {useful} useful of {padded_tokens} padded tokens): "
          + ", ".join(f"{name} {useful / t:.0f} tok/s" for name, t in medians.items()) + "; "
          + "; ".join(interleave.describe(k, v) for k, v in stats.items()))
