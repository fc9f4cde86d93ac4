"""Collators and batch steps: the formats match the Embedder's, SFT labels cover only the output,
packing cuts the concatenated documents into rows and resumes exactly, text ids mask variants."""

from __future__ import annotations

import pytest
import torch

from conan_core.data.batching import TaskBatcher
from conan_core.data.packing import IGNORE, PackedLMBatches
from conan_core.data.tokenize import DropIds, PairTokenizer, TokenCache, text_id, tokenize_texts
from conan_core.train.collate import add_negatives, collate_docs, collate_pairs, collate_sft, pad_rows, sft_row


class ListItems:
    """A resumable list of items (the Resumable contract: a cursor with a position)."""

    def __init__(self, items):
        self.items = items
        self.pos = 0

    def __iter__(self):
        while self.pos < len(self.items):
            self.pos += 1
            yield self.items[self.pos - 1]

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]

    def counters(self):
        return {"read": self.pos}


def _docs(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(0, 23, (1,), generator=g))
        out.append(torch.randint(7, 90, (length,), generator=g).tolist())
    return out


def test_text_ids_match_normalised_text():
    assert text_id("Hello  World") == text_id("hello world") == text_id(" HELLO\tworld ")
    assert text_id("hello world") != text_id("hello, world")
    assert 0 <= text_id("x") < 2**63


def test_packing_matches_reference_and_counts_each_document_once():
    docs = _docs()
    eos = 2
    # the reference: every document and its EOS concatenated, cut into rows of 8 (a partial row dropped)
    flat = [t for d in docs if d for t in d + [eos]]
    ref = [torch.tensor(flat[i:i + 8]) for i in range(0, len(flat) - 7, 8)]
    items = [{"ids": d + [eos] if d else [], "key": ("u", f"k{i}")} for i, d in enumerate(docs)]
    batches = list(PackedLMBatches(ListItems(items), batch_size=2, seq_len=8))
    rows = [r for b in batches for r in b["input_ids"]]
    assert len(rows) == len(ref) - len(ref) % 2
    for got, want in zip(rows, ref):
        assert torch.equal(got, want)
    seen = [k for b in batches for _, k in b["keys"]]
    assert len(seen) == len(set(seen))  # no document counted twice
    b = batches[0]
    flat_ids, flat_lab, flat_seg = b["input_ids"].view(-1), b["labels"].view(-1), b["segment_ids"]
    assert (flat_seg[:, 0] == 0).all()
    for row_ids, row_lab, row_seg in zip(b["input_ids"], b["labels"], b["segment_ids"]):
        for t in range(1, 8):
            new_doc = row_seg[t] != row_seg[t - 1]
            assert (row_lab[t] == IGNORE) == bool(new_doc)  # never predict across a document boundary
            if not new_doc:
                assert row_lab[t] == row_ids[t]
    assert b["tokens"] == 16 and flat_ids.shape == flat_lab.shape


def test_packing_resumes_exactly():
    items = [{"ids": d + [2], "key": ("u", f"k{i}")} for i, d in enumerate(_docs(40, seed=3))]
    full = list(PackedLMBatches(ListItems(items), 2, 8))
    stage = PackedLMBatches(ListItems(items), 2, 8)
    it = iter(stage)
    head = [next(it) for _ in range(3)]
    state = stage.state_dict()
    fresh = PackedLMBatches(ListItems(items), 2, 8)
    fresh.load_state_dict(state)
    rest = list(fresh)
    for a, b in zip(head + rest, full):
        assert torch.equal(a["input_ids"], b["input_ids"]) and a["keys"] == b["keys"]
    assert len(head) + len(rest) == len(full)


def test_sft_labels_only_on_output():
    ids, labels = sft_row([10, 11, 12], [20, 21], bos=1, eos=2, max_length=16)
    assert ids == [1, 10, 11, 12, 20, 21, 2]
    assert labels == [IGNORE] * 4 + [20, 21, 2]
    ids, labels = sft_row(list(range(10, 30)), list(range(40, 60)), bos=1, eos=2, max_length=10)
    assert len(ids) == 10 and ids[:5] == [1, 10, 11, 12, 13] and labels[5:] == [40, 41, 42, 43, 44]
    ids, labels = sft_row(list(range(10, 30)), [40], bos=1, eos=2, max_length=10)  # short output: keep prompt
    assert len(ids) == 10 and ids[-2:] == [40, 2] and labels.count(IGNORE) == 8
    batch = collate_sft([{"prompt": [10, 11], "output": [20], "key": ("u", "a")},
                         {"prompt": [12], "output": [21, 22, 23], "key": ("u", "b")}], 1, 2, 0, 32)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 20, 2, 0], [1, 12, 21, 22, 23, 2]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 20, 2, -100], [-100, -100, 21, 22, 23, 2]]
    assert batch["tokens"] == 11 and batch["keys"] == [("u", "a"), ("u", "b")]


def test_unpacked_rows():
    batch = collate_docs([{"ids": [1, 5, 6, 2], "key": ("u", "a")}, {"ids": [1, 7, 2], "key": ("u", "b")}], 0, 3)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 2]]
    assert batch["labels"].tolist() == [[1, 5, 6], [1, 7, 2]]
    batch = collate_docs([{"ids": [1, 5], "key": ("u", "a")}, {"ids": [1, 7, 2], "key": ("u", "b")}], 0, 8)
    assert batch["labels"].tolist()[0] == [1, 5, IGNORE]


def test_embedding_format_equals_the_embedder(small_tokenizer, tmp_path):
    """Training inputs are exactly what Embedder.encode feeds the model (same tokens, same pool mask)."""
    from conan_core.embedder import Embedder, EmbedderSettings
    from conan_core.registries import REGISTRIES

    texts = ["What does json.dumps return?", "", "x " * 200]
    model = REGISTRIES["backbones"].build({"type": "conan", "hidden_size": 16, "num_hidden_layers": 1,
                                           "head_dim": 4, "intermediate_size": 32}).build(len(small_tokenizer))
    pooler = REGISTRIES["poolers"].build({"type": "mean"}, hidden_size=16)
    emb = Embedder(model, small_tokenizer, pooler, EmbedderSettings(max_length=24), device="cpu")
    for instruction in (None, "Find the answer"):
        ours = tokenize_texts(small_tokenizer, texts, 24, instruction)
        assert ours == emb.tokenize(texts, instruction)
    ids, prefix = tokenize_texts(small_tokenizer, ["q"], 24, "Find the answer")
    query_id = small_tokenizer.convert_tokens_to_ids("<query>")
    assert ids[0][prefix[0] - 1] == query_id and ids[0][0] == small_tokenizer.bos_token_id
    batch = pad_rows(ids, 0, prefix)
    assert batch["pool_mask"][0, :prefix[0]].sum() == 0 and batch["pool_mask"][0, prefix[0]:].all()


def test_pairs_negatives_and_teacher_filter(small_tokenizer):
    tok = PairTokenizer(small_tokenizer, 16, "Retrieve")
    samples = [{"query": f"query {i}", "pos": f"passage {i}", "neg": ["n1", "n2"], "task": "retrieval",
                "__key__": f"k{i}", "__url__": "shard.tar"} for i in range(5)]
    samples[1]["instruction"] = "Classify"
    items = list(DropIds(ListItems([tok(s) for s in samples]), {"k2"}))
    assert [it["example_id"] for it in items] == ["k0", "k1", "k3", "k4"]
    batch = collate_pairs(items, pad_id=0)
    assert batch["query"]["input_ids"].shape[0] == 4 and batch["example_ids"] == ["k0", "k1", "k3", "k4"]
    assert batch["positive_ids"][0] == text_id("passage 0")
    add_negatives(batch, [["n1", "N1 "], ["n2", "x"], ["a", "b"], ["c", "d"]], small_tokenizer, 16, 0)
    assert batch["negative"]["input_ids"].shape[0] == 8 and batch["negative_ids"].shape == (4, 2)
    assert batch["negative_ids"][0, 0] == batch["negative_ids"][0, 1]  # case/space variants share an id
    # each query's instruction: its own when present, else the default
    instr = [small_tokenizer.decode(r) for r in batch["query"]["input_ids"][:2]]
    assert "Retrieve" in instr[0] and "Classify" in instr[1]
    drop = DropIds(ListItems([tok(s) for s in samples]), {"k2"})
    it = iter(drop)
    next(it), next(it), next(it)
    assert drop.counters()["teacher_dropped"] == 1


def test_token_cache_equals_tokenising_every_time(small_tokenizer):
    """The negatives' cache returns what tokenize_texts + text_id return, across evictions, repeats
    within a call and case variants; add_negatives builds the same tensors with and without it."""
    import random

    r = random.Random(7)
    words = ["json", "dumps", "Return", "the", "path", "of", "a", "file", "séquence", "数据", "x" * 300]
    pool = [" ".join(r.choice(words) for _ in range(r.randint(1, 40))) for _ in range(12)]
    pool += [pool[0].upper(), pool[1] + "  "]
    cache = TokenCache(small_tokenizer, 16, capacity=5)
    calls = [[r.choice(pool) for _ in range(r.randint(1, 9))] for _ in range(30)]
    for texts in calls:
        ids, tids = cache(texts)
        want = tokenize_texts(small_tokenizer, texts, 16, None)[0]
        assert [list(row) for row in ids] == want
        assert tids == [text_id(t) for t in texts]
        assert len(cache) <= 5
    assert cache.hits > 0 and cache.misses > 0
    assert cache.hits + cache.misses == sum(len(c) for c in calls)
    with pytest.raises(ValueError, match="capacity"):
        TokenCache(small_tokenizer, 16, capacity=0)

    negatives = [[pool[0], pool[3]], [pool[12], pool[0]]]  # a repeat and an upper-case variant
    plain = add_negatives({"tokens": 0}, negatives, small_tokenizer, 16, 0)
    cached = add_negatives({"tokens": 0}, negatives, small_tokenizer, 16, 0, TokenCache(small_tokenizer, 16))
    flat = [t for row in negatives for t in row]
    reference = pad_rows(tokenize_texts(small_tokenizer, flat, 16, None)[0], 0)
    for key in ("input_ids", "attention_mask", "pool_mask"):
        assert torch.equal(plain["negative"][key], cached["negative"][key])
        assert torch.equal(plain["negative"][key], reference[key])
    assert plain["negative_ids"].flatten().tolist() == [text_id(t) for t in flat]
    assert torch.equal(plain["negative_ids"], cached["negative_ids"]) and plain["tokens"] == cached["tokens"]
    assert cached["negative_ids"][0, 0] == cached["negative_ids"][1, 0]  # case variants share an id


def test_task_batches_are_homogeneous(small_tokenizer):
    tok = PairTokenizer(small_tokenizer, 16)
    tasks = ["retrieval", "clr", "retrieval", "classification", "clr", "retrieval", "clr", "retrieval"]
    samples = [{"query": f"q{i}", "pos": f"p{i}", "task": t, "__key__": f"k{i}", "__url__": "u"}
               for i, t in enumerate(tasks)]
    batches = list(TaskBatcher(ListItems([tok(s) for s in samples]), 2, key="task", drop_last=True))
    assert [{it["task"] for it in b} for b in batches] == [{"retrieval"}, {"clr"}, {"retrieval"}]
