"""Data pipeline throughput against a tiny model's consumption (ratio target >= 10x).

Pipeline (what pretraining runs): TextShards (sha256 verified, shuffle buffer 1000) ->
tokenise with a byte-level BPE tokenizer trained here on the same data with the ``tokenizers``
library (vocab 2000) -> the pretraining packer (PackedLMBatches): batches of 16 rows of 128 tokens with segment ids
stacked into LongTensor [16, 128]. Everything runs in one process on one thread, so the ratio is
per core: with N DataLoader workers the data side scales N-fold.

Anchor (the consumer): a tiny causal LM step measured in the same run, interleaved with the data
measurements: token embedding (V=2000, d=64), 2 x ``torch.nn.TransformerEncoderLayer``
(d_model=64, nhead=4, dim_feedforward=256, causal mask, batch_first), tied LM head,
cross-entropy, backward and an AdamW step, fp32 on CPU, one thread. This stands in for conan's
tiny preset model and is named ``tiny_lm_d64_2layers`` in the results.

Metric: ratio = data tokens/s / model tokens/s over interleaved rounds (``interleave.py``: ABBA
order, warm-up excluded, CPU time, median and spread of the per-round ratios), stored in
``benchmark.extra_info["ratio"]``. A round draws 16 batches from the pipeline (~0.1 s: long enough
that shard opening and the shuffle buffer's refills average out within it) and takes 3 training
steps on one fixed batch (~0.25 s). Correctness: with shuffling off, the pipeline's batches equal a
plain reference (tokenise each text, append EOS, concatenate, cut).
"""

from __future__ import annotations

import itertools
import os
import random

import pytest
import torch

from conan_core.data.loader import Map
from conan_core.data.packing import PackedLMBatches
from conan_core.data.shards import write_shards
from conan_core.registries import REGISTRIES

FULL = os.environ.get("CONAN_BENCH_FULL", "") not in ("", "0")
SEQ_LEN = 128
BATCH = 16
VOCAB = 2000
N_DOCS = 20000 if FULL else 4000  # ~1.1M tokens: enough for every round and the pytest-benchmark row
ROUNDS = 20
DATA_BATCHES = 16
MODEL_STEPS = 3

WORDS = ("the of and to in is was for on that with as by at from data model training text embedding "
         "retrieval query passage negative positive language mask attention layer token vector "
         "search index score rank learn contrastive loss batch epoch shard sample worker cache "
         "datos modelo texto consulta recherche donnée modèle apprentissage Daten Modell Suche").split()


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(40, 400))]
        for i in range(0, len(words), rng.randint(8, 20)):
            words[i] = words[i].capitalize()
        docs.append(" ".join(words) + f" {rng.randint(0, 10**6)}.")
    return docs


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


class _Encode:
    """Picklable tokenising function for Map (runs in DataLoader workers too): the item format of
    the pretraining packer, each document ending with EOS."""

    def __init__(self, tokenizer, eos: int):
        self.tokenizer = tokenizer
        self.eos = eos

    def __call__(self, sample: dict) -> dict:
        return {"ids": self.tokenizer.encode(sample["text"]).ids + [self.eos],
                "key": (sample["__url__"], sample["__key__"])}


def _input_ids(batch: dict) -> torch.Tensor:
    return batch["input_ids"]


def _pipeline(path: str, tokenizer, eos: int, shuffle: bool):
    """The packer pretraining uses (``conan_core.data.packing.PackedLMBatches``)."""
    source = REGISTRIES["sources"].build({"type": "text_shards", "path": path,
                                         "shuffle_buffer": 1000 if shuffle else 0,
                                         "shuffle_shards": shuffle}, seed=0)
    return Map(PackedLMBatches(Map(source, _Encode(tokenizer, eos)), BATCH, SEQ_LEN), _input_ids)


class _TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 64)
        self.layers = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True) for _ in range(2))
        self.register_buffer("causal", torch.nn.Transformer.generate_square_subsequent_mask(SEQ_LEN))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h, src_mask=self.causal, is_causal=True)
        logits = h @ self.embed.weight.T
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    texts = _corpus(N_DOCS)
    path = tmp_path_factory.mktemp("bench_text")
    write_shards(({"text": t} for t in texts), path, kind="text", shard_size=250)
    tokenizer = _train_tokenizer(texts)
    return str(path), tokenizer, texts


def _check_against_reference(path: str, tokenizer, texts: list[str], eos: int) -> None:
    """Unshuffled pipeline batches == tokenise each text, append EOS, concatenate, cut."""
    got = list(itertools.islice(_pipeline(path, tokenizer, eos, shuffle=False), 5))
    flat = [t for text in texts[:400] for t in tokenizer.encode(text).ids + [eos]]
    ref = torch.tensor(flat[:5 * BATCH * SEQ_LEN]).view(5, BATCH, SEQ_LEN)
    assert torch.equal(torch.stack(got), ref)
    assert tokenizer.decode(got[0][0].tolist()).startswith(texts[0][:40])


def test_data_throughput_vs_tiny_model(setup, benchmark, interleave):
    path, tokenizer, texts = setup
    eos = tokenizer.token_to_id("<eos>")
    _check_against_reference(path, tokenizer, texts, eos)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = _TinyLM()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches = iter(_pipeline(path, tokenizer, eos, shuffle=True))

        def data_round() -> list[torch.Tensor]:
            return [next(batches) for _ in range(DATA_BATCHES)]

        fixed = data_round()[0]

        def model_round() -> None:
            for _ in range(MODEL_STEPS):
                opt.zero_grad(set_to_none=True)
                loss = model(fixed)
                loss.backward()
                opt.step()
            assert torch.isfinite(loss)

        rounds = interleave.interleave({"data": data_round, "model": model_round}, rounds=ROUNDS)
        data_tokens, model_tokens = DATA_BATCHES * BATCH * SEQ_LEN, MODEL_STEPS * BATCH * SEQ_LEN
        # rate_data / rate_model = (data_tokens / t_data) / (model_tokens / t_model)
        stats = rounds.ratio("model", "data", scale=data_tokens / model_tokens)
        med = rounds.medians()
        data_rate, model_rate = data_tokens / med["data"], model_tokens / med["model"]
        info = benchmark.extra_info
        info.update({
            "anchor": "tiny_lm_d64_2layers (Embedding 2000x64, 2x TransformerEncoderLayer d64 h4 ff256, "
                      "tied head, CE, AdamW; fp32 CPU, 1 thread)",
            "pipeline": "text_shards(verify, buffer 1000) -> tokenizers BPE(2000) -> PackedLMBatches(16 x 128)",
            "data_tokens_per_s": round(data_rate), "model_tokens_per_s": round(model_rate), "target_ratio": 10.0,
        })
        interleave.record(info, "ratio", stats)
        benchmark.pedantic(lambda: next(batches), rounds=20, iterations=1, warmup_rounds=2)
        print(f"\ndata {data_rate:,.0f} tok/s, tiny model {model_rate:,.0f} tok/s; "
              f"{interleave.describe('ratio', stats)}")
        # the floor is enforced on the saved ratio by benchmarks/check_ratios.py (thresholds.json)
    finally:
        torch.set_num_threads(threads)
