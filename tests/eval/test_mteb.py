"""The mteb adapter: both encode signatures, instruction routing, similarity and metadata; and,
with mteb installed (the ``mteb`` extra, part of ``dev``), real ``mteb.evaluate`` runs of two tiny
random models on tasks defined from local files, with a result cache.

The protocol tests build inputs the way mteb builds them: a torch DataLoader over ``{"text": ...}``
rows (mteb >= 2) or a plain list (mteb 1.x); prompt types are str enums with the values of both
mteb versions ("query", "document" / "passage").
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

import numpy as np
import pytest
from torch.utils.data import DataLoader

from conan_core.errors import ConanError
from conan_core.eval.mteb import MTEBEncoder, texts_of


class PromptTypeV2(str, enum.Enum):
    query = "query"
    document = "document"


class PromptTypeV1(str, enum.Enum):
    query = "query"
    passage = "passage"


class LengthEncoder:
    """A real (if trivial) embedder: [len(text), number of words, 1, ...] and the instructions it saw."""

    dim = 8
    mrl_dims = [4, 8]
    max_length = 128

    def __init__(self, query_instruction: str = "Find the answer"):
        self.query_instruction = query_instruction
        self.calls: list[dict] = []

    def encode(self, texts, *, instruction=None, batch_size=32, dim=None):
        self.calls.append({"n": len(texts), "instruction": instruction, "batch_size": batch_size, "dim": dim})
        out = np.ones((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = [len(t) for t in texts]
        out[:, 1] = [len(t.split()) for t in texts]
        return out[:, : dim or self.dim]


TEXTS = ["one", "two words", "three words here", "", "five " * 5, "six", "seven seven"]


def test_texts_of_both_input_kinds():
    loader = DataLoader([{"text": t} for t in TEXTS], batch_size=3)
    assert texts_of(loader) == TEXTS
    assert texts_of(TEXTS) == TEXTS and texts_of("single") == ["single"]
    with pytest.raises(ConanError, match="'text'"):
        texts_of(DataLoader([{"image": 1}], batch_size=1))


def test_new_signature_with_dataloader():
    enc = LengthEncoder()
    model = MTEBEncoder(enc, batch_size=4)
    meta = SimpleNamespace(name="SomeRetrieval", type="Retrieval")
    loader = DataLoader([{"text": t} for t in TEXTS], batch_size=3)
    emb = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default",
                       prompt_type=PromptTypeV2.query)
    assert emb.shape == (len(TEXTS), 8) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[:, 0], [len(t) for t in TEXTS])  # order kept
    assert enc.calls[-1] == {"n": len(TEXTS), "instruction": "Find the answer", "batch_size": 4, "dim": None}
    model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default", prompt_type=PromptTypeV2.document)
    assert enc.calls[-1]["instruction"] is None
    model.encode(loader, task_metadata=SimpleNamespace(name="STSB", type="STS"), hf_split="test",
                 hf_subset="default")
    assert enc.calls[-1]["instruction"] == "Retrieve semantically similar text"


def test_old_signature_with_list():
    enc = LengthEncoder()
    model = MTEBEncoder(enc, dim=4)
    emb = model.encode(TEXTS, task_name="UnknownTaskName", prompt_type=PromptTypeV1.passage, batch_size=2)
    assert emb.shape == (len(TEXTS), 4)
    assert enc.calls[-1] == {"n": len(TEXTS), "instruction": None, "batch_size": 2, "dim": 4}
    model.encode(sentences=TEXTS, task_name="UnknownTaskName", prompt_type="query")
    assert enc.calls[-1]["instruction"] == "Find the answer"  # unknown type: queries get the retrieval one
    model.encode(TEXTS, task_name="UnknownTaskName")
    assert enc.calls[-1]["instruction"] is None  # symmetric text of an unknown type: none
    with pytest.raises(ConanError, match="prompt_type"):
        model.encode(TEXTS, task_name="x", prompt_type="answer")
    with pytest.raises(ConanError, match="no inputs"):
        model.encode(task_name="x")


def test_instruction_policy():
    untrained = MTEBEncoder(LengthEncoder(query_instruction=""))
    assert untrained.use_instructions is False
    assert untrained.instruction_for("STSB", "STS", None) is None
    assert untrained.instruction_for("X", "Retrieval", "query") is None
    forced = MTEBEncoder(LengthEncoder(query_instruction=""), use_instructions=True,
                         instructions={"STS": "same meaning?"}, task_instructions={"MyTask": "custom"})
    assert forced.instruction_for("STSB", "STS", None) == "same meaning?"
    assert forced.instruction_for("MyTask", "Retrieval", "query") == "custom"
    assert forced.instruction_for("MyTask", "Retrieval", "document") is None
    assert forced.instruction_for("Other", "Retrieval", "query").startswith("Given a question")
    # a task's own prompt (mteb TaskMetadata.prompt) wins over the task-type table
    assert forced.instruction_for("Other", "Retrieval", "query", {"query": "Find the rebuttal"}) == "Find the rebuttal"
    assert forced.instruction_for("Other", "Retrieval", "document", {"query": "Find it"}) is None
    assert forced.instruction_for("Other", "STS", None, "Same meaning") == "Same meaning"


def test_similarity_and_metadata():
    model = MTEBEncoder(LengthEncoder(), name="tests/tiny", revision="r1", languages=["eng-Latn"])
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]])
    sim = model.similarity(a, b)
    assert sim.shape == (2, 3)
    np.testing.assert_allclose(sim, [[1.0, 0.8, -0.6], [0.6, 0.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(a, b[:2]), [1.0, 0.0], atol=1e-6)
    meta = model.metadata()
    assert meta["name"] == "tests/tiny" and meta["embed_dim"] == [4, 8] and meta["mrl_dims"] == [4, 8]
    assert meta["max_tokens"] == 128 and meta["similarity_fn_name"] == "cosine" and meta["revision"] == "r1"
    assert MTEBEncoder(LengthEncoder(), name="a/b", revision="r", dim=4).metadata()["embed_dim"] == 4
    with pytest.raises(ConanError, match="organisation/model"):
        MTEBEncoder(LengthEncoder(), name="tiny")
    with pytest.raises(ConanError, match="revision="):  # nothing to fingerprint: a revision is required
        MTEBEncoder(LengthEncoder(), name="a/b").metadata()


# ----------------------------------------------------------------------------- real mteb runs

mteb = pytest.importorskip("mteb", reason="the mteb extra is not installed")


def load_tiny_run():
    """The tiny-run helpers (:mod:`tests.utils`: ``build_tiny_run``, ``SENTENCES``)."""
    from tests import utils

    return utils


class CountingEncoder(MTEBEncoder):
    """The real adapter, counting how many texts mteb asked it to encode."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoded = 0

    def encode(self, inputs=None, **kwargs):
        out = super().encode(inputs, **kwargs)
        self.encoded += len(out)
        return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny random runs that differ in their weights (initialisation scale)."""
    tiny_run = load_tiny_run()
    root = tmp_path_factory.mktemp("mteb_runs")
    a = tiny_run.build_tiny_run(root / "run_a")
    b = tiny_run.build_tiny_run(root / "run_b", backbone={"initializer_range": 0.5})
    return a, b, tiny_run


def write_local_tasks(root, sentences):
    import json

    docs = [s for s in sentences if s.strip()]
    ret = root / "retrieval"
    ret.mkdir(parents=True)
    (ret / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                              for i, t in enumerate(docs)))
    (ret / "queries.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "text": t[:15]}) + "\n"
                                               for i, t in enumerate(docs)))
    (ret / "qrels.jsonl").write_text("".join(json.dumps({"qid": f"q{i}", "doc_id": f"d{i}", "score": 1}) + "\n"
                                             for i in range(len(docs))))
    sts = root / "sts.jsonl"
    pairs = [(docs[i], docs[j], float((i * 7 + j * 3) % 6)) for i in range(len(docs)) for j in range(i, len(docs))]
    sts.write_text("".join(json.dumps({"s1": a, "s2": b, "score": s}) + "\n" for a, b, s in pairs))
    return ret, sts


def test_local_tasks_two_models_and_the_cache(two_runs, tmp_path):
    from conan_core import Embedder
    from conan_core.eval.mteb import local_task

    run_a, run_b, tiny_run = two_runs
    ret_dir, sts_file = write_local_tasks(tmp_path / "data", tiny_run.SENTENCES)
    cache = mteb.ResultCache(cache_path=tmp_path / "cache")
    emb_a, emb_b = Embedder.load(run_a), Embedder.load(run_b)

    def run(embedder, **kwargs):
        model = CountingEncoder(embedder, **kwargs)
        tasks = [local_task(ret_dir), local_task(sts_file)]
        res = mteb.evaluate(model, tasks, cache=cache, show_progress_bar=False)
        scores = {r.task_name: r.scores["test"][0]["main_score"] for r in res.task_results}
        return model, tasks, res, scores

    model_a, tasks, res_a, scores_a = run(emb_a)
    model_b, _, res_b, scores_b = run(emb_b)
    meta_a, meta_b = model_a.mteb_model_meta, model_b.mteb_model_meta
    from mteb.models.model_meta import ModelMeta

    assert isinstance(meta_a, ModelMeta)
    assert (meta_a.name, meta_b.name) == ("conan_core/run_a-supervised", "conan_core/run_b-supervised")
    assert meta_a.revision == emb_a.fingerprint()[:12] != meta_b.revision
    assert meta_a.embed_dim == [8, 16, 32] and meta_a.max_tokens == 64 and meta_a.n_parameters > 0
    assert str(meta_a.similarity_fn_name.value) == "cosine" and meta_a.use_instructions is True
    assert res_a.model_name == meta_a.name and res_b.model_name == meta_b.name
    assert model_a.encoded > 0 and model_b.encoded > 0  # B was encoded, not served A's scores
    assert scores_a != pytest.approx(scores_b, abs=1e-5)
    for task in tasks:
        for meta, scores in ((meta_a, scores_a), (meta_b, scores_b)):
            path = cache.get_task_result_path(task.metadata.name, meta)
            assert path.is_file() and meta.name.replace("/", "__") in str(path)
            saved = mteb.TaskResult.from_disk(path)
            # mteb stores scores rounded to 5-6 digits
            assert saved.scores["test"][0]["main_score"] == pytest.approx(scores[task.metadata.name], abs=1e-5)

    # a second evaluation with the same cache: each model gets its own scores back, without encoding
    again_b, _, _, rescored_b = run(emb_b)
    assert again_b.encoded == 0 and rescored_b == pytest.approx(scores_b, abs=1e-5)
    # the same name with other weights (a run retrained in place): a new revision, encoded afresh
    import torch

    with torch.no_grad():
        for p in emb_b.model.parameters():
            p.mul_(1.5)
    model_b2, _, _, scores_b2 = run(emb_b)
    assert model_b2.mteb_model_meta.name == meta_b.name and model_b2.mteb_model_meta.revision != meta_b.revision
    assert model_b2.encoded > 0 and scores_b2 != pytest.approx(scores_b, abs=1e-5)
    # an MRL dimension is an experiment of its own, not the full model's cache entry
    model_small, _, _, _ = run(emb_a, dim=8)
    assert model_small.encoded > 0 and model_small.mteb_model_meta.experiment_kwargs == {"dim": 8}


def test_local_task_names_follow_the_data(tmp_path):
    from conan_core.eval.data import EvalDataError
    from conan_core.eval.mteb import local_task

    tiny_run = load_tiny_run()
    ret_dir, sts_file = write_local_tasks(tmp_path / "v1", tiny_run.SENTENCES)
    first = local_task(ret_dir)
    assert first.metadata.name.startswith("LocalRetrieval-retrieval-") and first.metadata.type == "Retrieval"
    assert local_task(sts_file).metadata.main_score == "cosine_spearman"
    with open(ret_dir / "corpus.jsonl", "a") as fh:
        fh.write('{"id": "extra", "text": "one more document"}\n')
    assert local_task(ret_dir).metadata.name != first.metadata.name  # edited data: never a stale cache hit
    flat = tmp_path / "flat.jsonl"
    flat.write_text('{"s1": "a", "s2": "b", "score": 1}\n{"s1": "c", "s2": "d", "score": 1}\n')
    with pytest.raises(EvalDataError, match="two different gold scores"):
        local_task(flat)
    with pytest.raises(EvalDataError, match="neither a retrieval directory"):
        local_task(tmp_path)


def test_cli_eval_mteb(two_runs, tmp_path, capsys, monkeypatch):
    import datasets
    import huggingface_hub

    from conan_core.cli import main

    run_a, _, tiny_run = two_runs
    ret_dir, sts_file = write_local_tasks(tmp_path / "data", tiny_run.SENTENCES)
    cache = tmp_path / "cache"
    assert main(["eval", str(run_a), "--mteb", str(ret_dir), "--mteb", str(sts_file), "--mteb-cache", str(cache),
                 "--language", "eng-Latn"]) == 0
    out = capsys.readouterr().out
    assert "ndcg_at_10" in out and "cosine_spearman" in out
    saved = list((cache / "results" / "conan_core__run_a-supervised").glob("*/LocalRetrieval-*.json"))
    assert len(saved) == 1
    meta = (saved[0].parent / "model_meta.json").read_text()
    assert '"eng-Latn"' in meta

    assert main(["eval", str(run_a), "--mteb", "STSBenchmrk", "--mteb-cache", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "neither an existing path nor an mteb task name" in err and "'STSBenchmark'" in err
    # a real mteb task whose data is not on this machine: a named error, and no download attempt
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert main(["eval", str(run_a), "--mteb", "STSBenchmark", "--mteb-cache", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "STSBenchmark" in err and "mteb/stsbenchmark-sts" in err and "not available on this machine" in err
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # the offline switch was restored
