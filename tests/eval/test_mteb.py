"""The mteb adapter: both encode signatures, instruction routing, similarity and metadata.

mteb is not a dependency, so its inputs are built the way mteb builds them: a torch DataLoader over
``{"text": ...}`` rows (mteb >= 2) or a plain list (mteb 1.x); prompt types are str enums with
the values of both mteb versions ("query", "document" / "passage").
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


def test_similarity_and_metadata():
    model = MTEBEncoder(LengthEncoder(), name="tiny")
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]])
    sim = model.similarity(a, b)
    assert sim.shape == (2, 3)
    np.testing.assert_allclose(sim, [[1.0, 0.8, -0.6], [0.6, 0.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(a, b[:2]), [1.0, 0.0], atol=1e-6)
    meta = model.metadata()
    assert meta["name"] == "tiny" and meta["embed_dim"] == 8 and meta["mrl_dims"] == [4, 8]
    assert meta["max_tokens"] == 128 and meta["similarity_fn_name"] == "cosine"
    mteb_meta = model.mteb_model_meta  # the dict itself while mteb is not installed
    assert mteb_meta == meta if isinstance(mteb_meta, dict) else mteb_meta.name == "tiny"
