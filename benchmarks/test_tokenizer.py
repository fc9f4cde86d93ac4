"""Tokenizer throughput: our loaded tokenizer (transformers wrapper over the converted sentencepiece
model) against a plain ``tokenizers`` BPE trained on the same texts with the same vocabulary size.

Both encode the same batch of real demo texts (docstrings, CLDR records and multilingual names);
both are timed in interleaved rounds (``interleave.py``: ABBA order, warm-up excluded, CPU time)
and the per-round ratio ``ours_over_anchor`` (median and spread) goes to ``benchmark.extra_info``
with tokens per character of each (compression). Before timing, our ids are checked against the
sentencepiece reference. ``TOKENIZERS_PARALLELISM=false`` (``make bench``) keeps both on one
thread, so the CPU clock is the right one.

Sizes: demo scale 0.2, vocab 2000, 2000 texts; ``CONAN_BENCH_FULL=1``: scale 1, vocab 8000.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
SCALE, VOCAB, N_TEXTS = (1.0, 8000, 8000) if FULL else (0.2, 2000, 2000)
ROUNDS = 5 if FULL else 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from conan_core.data.demo import build_demo
    from conan_core.tokenizer import iter_texts, load_sentencepiece, load_tokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("bench_tok")
    build_demo(root / "data", scale=SCALE)
    ours_dir = train_tokenizer([root / "data" / "pretrain"], VOCAB, root / "ours", progress=False)
    texts = list(iter_texts([root / "data" / "pretrain"]))
    anchor = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    anchor.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    anchor.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="never")
    anchor.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=[f"<0x{b:02X}>" for b in range(256)]))
    batch = (texts + list(iter_texts([root / "data" / "supervised"])))[:N_TEXTS]
    return load_tokenizer(ours_dir), load_sentencepiece(ours_dir), anchor, batch


def test_tokenizer_throughput_vs_tokenizers_bpe(benchmark, interleave, setup):
    ours, sp, anchor, batch = setup
    sample = batch[:200]
    assert ours(sample, add_special_tokens=False)["input_ids"] == [sp.encode(t) for t in sample]

    fns = {"ours": lambda: ours(batch, add_special_tokens=False)["input_ids"],
           "anchor": lambda: [e.ids for e in anchor.encode_batch(batch, add_special_tokens=False)]}
    rounds = benchmark.pedantic(interleave.interleave, args=(fns,), kwargs={"rounds": ROUNDS},
                                rounds=1, iterations=1)
    medians = rounds.medians()
    stats = rounds.ratio("ours", "anchor")
    chars = sum(len(t) for t in batch)
    tokens = {k: sum(len(ids) for ids in fn()) for k, fn in fns.items()}
    info = benchmark.extra_info
    info.update(texts=len(batch), chars=chars, vocab_size=VOCAB, medians_s=medians,
                tokens_per_char={k: v / chars for k, v in tokens.items()},
                chars_per_s={k: chars / v for k, v in medians.items()})
    interleave.record(info, "ours_over_anchor", stats)
    print(f"\ntokenizer: ours {medians['ours'] * 1e3:.1f} ms, tokenizers BPE {medians['anchor'] * 1e3:.1f} ms "
          f"for {len(batch)} texts / {chars} chars ({interleave.describe('ours_over_anchor', stats)}); "
          f"tokens/char ours {tokens['ours'] / chars:.3f}, anchor {tokens['anchor'] / chars:.3f}")
