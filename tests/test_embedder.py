"""Embedder on a tiny random model: loading rules, batching against a float64 reference, order,
MRL, instructions, edge cases, the evaluators and mteb adapter on a real model, and the CLI."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conan_core import Embedder
from conan_core.embedder import EmbedderLoadError, format_query, resolve_model_dir
from conan_core.errors import ConanError
from conan_core.registries import REGISTRIES

from tests import utils as tiny_run
SENTENCES = tiny_run.SENTENCES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run.build_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def embedder(run_dir) -> Embedder:
    return Embedder.load(run_dir)


def reference_embedding(emb: Embedder, text: str, instruction: str | None = None,
                        exclude_instruction: bool = False) -> np.ndarray:
    """float64, one unpadded sequence, mean pooling written out: the reference of encode()."""
    model = copy.deepcopy(emb.model).double()
    ids = emb.tokenizer(format_query(text, instruction), truncation=True, max_length=emb.max_length)["input_ids"]
    start = 0
    if exclude_instruction and instruction:
        start = ids.index(emb.tokenizer.convert_tokens_to_ids("<query>")) + 1
    mask = REGISTRIES["masks"].build({"type": "bidirectional"})
    with torch.no_grad():
        hidden = model.encode(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), mask=mask)[0]
    vec = hidden[start:].mean(0).numpy()
    return vec / np.linalg.norm(vec)


def test_load_resolution(run_dir, tmp_path):
    final = run_dir / "supervised" / "final"
    assert resolve_model_dir(run_dir) == (final, run_dir)
    assert resolve_model_dir(run_dir / "supervised") == (final, run_dir)
    assert resolve_model_dir(final) == (final, run_dir)
    # supervised is preferred over an also finished weak stage; a not-DONE stage is ignored
    other = tmp_path / "run2"
    shutil.copytree(run_dir, other)
    shutil.copytree(other / "supervised", other / "weak")
    (other / "supervised" / "DONE").unlink()
    assert resolve_model_dir(other)[0] == other / "weak" / "final"
    (other / "weak" / "DONE").unlink()
    with pytest.raises(EmbedderLoadError, match="supervised/DONE"):
        Embedder.load(other)
    with pytest.raises(EmbedderLoadError, match="no such directory"):
        Embedder.load(tmp_path / "missing")


def test_encode_matches_float64_reference_in_input_order(embedder):
    out = embedder.encode(SENTENCES, batch_size=3)
    assert out.shape == (len(SENTENCES), embedder.dim) and out.dtype == np.float32
    ref = np.stack([reference_embedding(embedder, t) for t in SENTENCES])
    np.testing.assert_allclose(out, ref, atol=2e-5)
    # length-sorted batching restores the input order: any permutation / batch size agrees
    perm = np.random.default_rng(0).permutation(len(SENTENCES))
    shuffled = embedder.encode([SENTENCES[i] for i in perm], batch_size=2)
    np.testing.assert_allclose(shuffled, out[perm], atol=1e-5)
    np.testing.assert_allclose(embedder.encode(SENTENCES, batch_size=1), out, atol=1e-5)


def test_packed_encode_matches_the_float64_reference(embedder, run_dir):
    ref = np.stack([reference_embedding(embedder, t) for t in SENTENCES])
    for batch_size in (3, len(SENTENCES)):
        packed = embedder.encode(SENTENCES, batch_size=batch_size, packing=True)
        np.testing.assert_allclose(packed, ref, atol=2e-5)
    np.testing.assert_allclose(embedder.encode(SENTENCES, packing=True), embedder.encode(SENTENCES), atol=1e-5)
    # instructions are left out of pooling in the packed rows too
    emb = Embedder.load(tiny_run.build_tiny_run(run_dir.parent / "packed_excl",
                                                pooler={"type": "mean", "exclude_instruction": True}))
    want = np.stack([reference_embedding(emb, t, emb.query_instruction, exclude_instruction=True)
                     for t in SENTENCES[:4]])
    np.testing.assert_allclose(emb.encode_queries(SENTENCES[:4], packing=True), want, atol=2e-5)


def test_queries_get_the_run_instruction(embedder):
    assert embedder.query_instruction == "Find passages that answer the question"
    q = embedder.encode_queries(SENTENCES[:3])
    ref = np.stack([reference_embedding(embedder, t, embedder.query_instruction) for t in SENTENCES[:3]])
    np.testing.assert_allclose(q, ref, atol=2e-5)
    np.testing.assert_allclose(embedder.encode_corpus(SENTENCES[:3]), embedder.encode(SENTENCES[:3]), atol=1e-6)
    assert not np.allclose(q, embedder.encode_corpus(SENTENCES[:3]), atol=1e-3)
    ids, n_prefix = embedder.tokenize(["abc"], "do it")
    query_id = embedder.tokenizer.convert_tokens_to_ids("<query>")
    assert ids[0][n_prefix[0] - 1] == query_id and ids[0][0] == embedder.tokenizer.bos_token_id
    assert embedder.tokenize(["abc"])[1] == [0]


def test_exclude_instruction_pooling(run_dir, tmp_path):
    root = tiny_run.build_tiny_run(tmp_path / "excl", pooler={"type": "mean", "exclude_instruction": True})
    emb = Embedder.load(root)
    q = emb.encode_queries(SENTENCES[:4])
    ref = np.stack([reference_embedding(emb, t, emb.query_instruction, exclude_instruction=True)
                    for t in SENTENCES[:4]])
    np.testing.assert_allclose(q, ref, atol=2e-5)


def test_mrl_truncation_renormalises(embedder):
    raw = embedder.encode(SENTENCES, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    for dim in embedder.mrl_dims:
        small = embedder.encode(SENTENCES, dim=dim)
        assert small.shape == (len(SENTENCES), dim)
        np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
        expected = raw[:, :dim] / np.linalg.norm(raw[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(small, expected, atol=1e-5)
    with pytest.raises(ConanError, match="dim must be in"):
        embedder.encode(["x"], dim=embedder.dim + 1)


def test_edge_cases(embedder):
    empty = embedder.encode([])
    assert empty.shape == (0, embedder.dim) and empty.dtype == np.float32
    assert embedder.encode([], dim=8).shape == (0, 8)
    blank = embedder.encode([""])  # <s> </s> only: a finite unit vector
    assert np.isfinite(blank).all() and np.linalg.norm(blank) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(embedder.encode("short"), embedder.encode(["short"]), atol=1e-6)
    # max_length truncation: two texts that agree on their first 64 tokens embed the same
    long_a, long_b = "x " * 200, "x " * 300
    np.testing.assert_allclose(embedder.encode([long_a]), embedder.encode([long_b]), atol=1e-6)
    with pytest.raises(ConanError, match="expected str"):
        embedder.encode(["ok", 3])
    with pytest.raises(ConanError, match="batch_size"):
        embedder.encode(["ok"], batch_size=0)


def test_bf16_is_close_to_fp32(run_dir):
    fp32 = Embedder.load(run_dir, device="cpu").encode(SENTENCES[:4])
    emb = Embedder.load(run_dir, device="cpu", dtype="bf16")
    assert emb.dtype == torch.bfloat16
    bf16 = emb.encode(SENTENCES[:4])
    assert bf16.dtype == np.float32
    assert np.abs((bf16 * fp32).sum(1) - 1).max() < 0.02  # cosine to the fp32 embedding


def test_save_roundtrip(embedder, tmp_path):
    path = embedder.save(tmp_path / "saved")
    again = Embedder.load(path)
    assert again.settings == embedder.settings
    np.testing.assert_allclose(again.encode_queries(SENTENCES), embedder.encode_queries(SENTENCES), atol=1e-6)


def test_evaluators_and_mteb_on_a_real_embedder(embedder, tmp_path):
    root = tmp_path / "eval" / "retrieval"
    root.mkdir(parents=True)
    docs = [s for s in SENTENCES if s]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "text": t[:12], "lang": "en"}) + "\n"
                                                for i, t in enumerate(docs)))
    (root / "qrels.jsonl").write_text("".join(json.dumps({"qid": f"q{i}", "doc_id": f"d{i}", "score": 1}) + "\n"
                                              for i in range(len(docs))))
    res = REGISTRIES["evaluators"].build({"type": "retrieval"}).evaluate(embedder, tmp_path)
    for key in ("ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10"):
        assert 0.0 <= res[key] <= 1.0 and 0.0 <= res[f"bm25/{key}"] <= 1.0
    assert res["recall@100"] == 1.0 and res["n_queries"] == len(docs)

    from conan_core.eval.mteb import MTEBEncoder

    model = MTEBEncoder(embedder, batch_size=3)
    loader = DataLoader([{"text": t} for t in SENTENCES], batch_size=4)
    new = model.encode(loader, task_metadata=SimpleNamespace(name="T", type="Retrieval"), hf_split="test",
                       hf_subset="default", prompt_type="query")
    np.testing.assert_allclose(new, embedder.encode_queries(SENTENCES), atol=1e-6)
    old = model.encode(SENTENCES, task_name="T", prompt_type="passage")
    np.testing.assert_allclose(old, embedder.encode_corpus(SENTENCES), atol=1e-6)
    assert MTEBEncoder(embedder, dim=8).encode(SENTENCES, task_name="T").shape == (len(SENTENCES), 8)
    assert model.metadata()["embed_dim"] == [8, 16, 32] == model.metadata()["mrl_dims"]  # MRL: the range
    assert model.metadata()["revision"] == embedder.fingerprint()[:12]


def test_cli_encode_and_eval(run_dir, embedder, tmp_path, capsys):
    from conan_core.cli import main

    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(SENTENCES[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert main(["encode", str(run_dir), "--input", str(text_file), "--out", str(out), "--query", "--dim", "16"]) == 0
    np.testing.assert_allclose(np.load(out), embedder.encode_queries(SENTENCES[:3], dim=16), atol=1e-6)
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t}) + "\n" for t in SENTENCES[:2]), encoding="utf-8")
    assert main(["encode", str(run_dir), "--input", str(jsonl), "--field", "body", "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), embedder.encode(SENTENCES[:2]), atol=1e-6)
    assert main(["encode", str(run_dir), "--input", str(jsonl), "--field", "body", "--out", str(out), "--packing"]) == 0
    np.testing.assert_allclose(np.load(out), embedder.encode(SENTENCES[:2]), atol=1e-5)
    assert main(["encode", str(run_dir), "--input", str(jsonl), "--out", str(out)]) == 3  # no "text" field: bad input data
    assert "texts.jsonl:1" in capsys.readouterr().err

    data = tmp_path / "data"
    (data / "eval").mkdir(parents=True)
    (data / "eval" / "sts.jsonl").write_text("".join(
        json.dumps({"s1": a, "s2": b, "score": s}) + "\n"
        for a, b, s in [("a cat", "a cat", 5), ("a cat", "the dog", 2), ("stars", "markets", 0)]))
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert "spearman" in captured.out and "bm25" in captured.out and "skipping retrieval" in captured.err
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"sts"} and "bm25/spearman" in metrics["sts"]
    assert main(["eval", str(run_dir), "--data", str(data), "--task", "retrieval"]) == 3  # no such data
    assert "no retrieval evaluation data" in capsys.readouterr().err


def test_final_dir_without_embedder_json_uses_defaults(run_dir, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run_dir, root)
    shutil.move(str(root / "supervised"), str(root / "sft"))
    (root / "sft" / "final" / "embedder.json").unlink()
    (root / "config.yaml").write_text("name: t\nsft:\n  max_length: 48\nsupervised:\n  query_instruction: Q\n")
    emb = Embedder.load(root)
    assert emb.settings.pooler == {"type": "mean"} and emb.settings.mask == {"type": "bidirectional"}
    assert emb.max_length == 48 and emb.query_instruction == "Q" and emb.settings.stage == "sft"


def test_hf_backbone_final_dir(tmp_path):
    """A run whose backbone is a transformers Llama: Embedder wraps it in HFDecoder (its export is
    tested in tests/test_export_hf.py)."""
    from conan_core.backbones.hf import HFDecoder
    from conan_core.tokenizer import load_tokenizer

    root = tiny_run.build_tiny_run(tmp_path / "run")
    final = root / "supervised" / "final"
    tokenizer = load_tokenizer(final)
    torch.manual_seed(0)
    decoder = REGISTRIES["backbones"].build({"type": "hf", "hidden_size": 32, "num_attention_heads": 4,
                                              "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64,
                                              "initializer_range": 0.2}).build(len(tokenizer))
    for name in ("model.safetensors", "config.json"):
        (final / name).unlink()
    decoder.save_pretrained(str(final))
    emb = Embedder.load(root)
    assert isinstance(emb.model, HFDecoder)
    out = emb.encode(SENTENCES[:4], batch_size=3)
    ref_model = copy.deepcopy(decoder).double().eval()
    mask = REGISTRIES["masks"].build({"type": "bidirectional"})
    for text, row in zip(SENTENCES[:4], out):
        ids = tokenizer(text, truncation=True, max_length=emb.max_length)["input_ids"]
        with torch.no_grad():
            hidden = ref_model.encode(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), mask=mask)[0]
        vec = hidden.mean(0).numpy()
        np.testing.assert_allclose(row, vec / np.linalg.norm(vec), atol=2e-5)


def test_progress_bar(embedder, capsys):
    embedder.encode(SENTENCES, batch_size=2, show_progress=True)
    assert "encode" in capsys.readouterr().err
    embedder.encode(SENTENCES, batch_size=2)  # auto: stderr is not a terminal and only 8 texts
    assert capsys.readouterr().err == ""


class RecordingTokenizer:
    """The Embedder's real tokenizer, recording the length of every text it is handed."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.lengths: list[int] = []

    def __call__(self, texts, *args, **kwargs):
        self.lengths.extend(len(t) for t in ([texts] if isinstance(texts, str) else texts))
        return self._tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def long_texts() -> list[str]:
    """Texts around and far beyond the cut budget: prose, no spaces at all, CJK, leading blanks."""
    import random

    lines = tiny_run.docstring_corpus(limit=10**6)
    rng = random.Random(0)
    out = []
    for k in (1, 5, 12, 20, 30, 60, 200, 400):
        for _ in range(6):
            start = rng.randrange(len(lines) - k)
            out.append(" ".join(lines[start:start + k]))
    out += [t.replace(" ", "") for t in out[-12:]]
    out += ["東京は日本の首都です。" * n for n in (20, 90, 400)]
    out += [" " * 3000 + out[30], "x" * 5000, "\n" * 4000 + "tail", "ab " * 2000]
    return out


def test_long_texts_are_cut_with_the_ids_of_whole_tokenisation(embedder):
    from conan_core.embedder import CUT_CHARS_PER_TOKEN, CUT_MIN_SLACK

    texts = long_texts()
    budget = CUT_CHARS_PER_TOKEN * embedder.max_length + CUT_MIN_SLACK
    assert sum(len(t) > budget for t in texts) > 40 and sum(len(t) <= budget for t in texts) > 10
    for instruction in (None, embedder.query_instruction):
        ids, n_prefix = embedder.tokenize(texts, instruction)
        whole = embedder.tokenizer([format_query(t, instruction) for t in texts], truncation=True,
                                   max_length=embedder.max_length)["input_ids"]
        assert ids == [list(row) for row in whole]
        if instruction:
            assert all(0 < n <= embedder.max_length for n in n_prefix)


def test_a_10mb_line_is_cut_before_tokenising(run_dir):
    emb = Embedder.load(run_dir)
    recorder = RecordingTokenizer(emb.tokenizer)
    emb.tokenizer = recorder
    huge = "the soft mask opens attention " * 350_000  # 10.5 MB on one line
    assert len(huge) > 10_000_000
    out = emb.encode([SENTENCES[0], huge, huge[:-7]], batch_size=2)
    # what reached the tokenizer: the short text whole, the long ones cut to a few thousand characters
    assert max(recorder.lengths) < 20 * emb.max_length + 1024, max(recorder.lengths)
    by_hand = emb.encode([huge[:3000]])
    np.testing.assert_allclose(out[1:], np.repeat(by_hand, 2, axis=0), atol=1e-6)
    np.testing.assert_allclose(out[:1], emb.encode([SENTENCES[0]]), atol=1e-6)
    ids = emb.tokenize([huge])[0][0]
    assert len(ids) == emb.max_length and ids == emb.tokenizer(huge[:3000], truncation=True,
                                                               max_length=emb.max_length)["input_ids"]


def test_cli_encode_input_and_output_errors(run_dir, tmp_path, capsys):
    from conan_core.cli import main

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nsecond line\ncaf\xe9 au lait\n".encode("latin-1"))
    out = tmp_path / "emb.npy"
    assert main(["encode", str(run_dir), "--input", str(bad), "--out", str(out)]) == 3  # bad input data
    err = capsys.readouterr().err
    assert f"{bad}:3: not valid UTF-8" in err and "e9" in err and "Traceback" not in err
    assert not out.exists()
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert main(["encode", str(run_dir), "--input", str(bad_jsonl), "--out", str(out)]) == 3
    assert f"{bad_jsonl}:2: not valid UTF-8" in capsys.readouterr().err

    good = tmp_path / "texts.txt"
    good.write_text("a\nb\n", encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # running as root: permissions are not enforced
            target = tmp_path / "texts.txt" / "emb.npy"  # a path below a regular file
        else:
            target = locked / "emb.npy"
        assert main(["encode", str(run_dir), "--input", str(good), "--out", str(target)]) == 4  # storage
        err = capsys.readouterr().err
        assert f"{target}: cannot write the output" in err and "Traceback" not in err
    finally:
        locked.chmod(0o700)
    assert main(["encode", str(run_dir), "--input", str(good), "--out", str(tmp_path)]) == 4  # an unusable output path
    assert "--out is a directory" in capsys.readouterr().err

    from conan_core.commands.eval import EncodeInputError, OutputPathError

    assert issubclass(EncodeInputError, ConanError) and issubclass(OutputPathError, ConanError)
    # a name without .npy gets numpy's suffix; nothing else is left in the directory
    assert main(["encode", str(run_dir), "--input", str(good), "--out", str(tmp_path / "plain")]) == 0
    assert np.load(tmp_path / "plain.npy").shape[0] == 2
    assert not list(tmp_path.glob(".*.tmp"))
