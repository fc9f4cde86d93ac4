"""An adapter that lets `mteb <https://github.com/embeddings-benchmark/mteb>`_ evaluate an
:class:`~conan_core.embedder.Embedder`, without making mteb a dependency.

Both encoder protocols are implemented by one ``encode``:

* mteb >= 2: ``encode(inputs: DataLoader, *, task_metadata, hf_split, hf_subset, prompt_type=None)``,
  each batch a dict whose ``"text"`` holds a list of strings;
* mteb 1.x: ``encode(sentences: list[str], *, task_name, prompt_type=None, **kwargs)``.

Instructions (RECIPE §7 leaves the templates open; these follow the common E5/NV-Embed usage):
queries (``prompt_type`` "query") get the instruction of the task type, documents ("document" /
"passage") get none, and symmetric tasks (no ``prompt_type``: STS, classification, clustering...)
get their task-type instruction on every text. A retrieval query uses the run's own
``query_instruction`` (what training used). When the run trained without any instruction
(``query_instruction`` empty) no instruction is used anywhere, unless ``use_instructions=True``.

Usage::

    import mteb
    from conan_core import Embedder
    from conan_core.eval.mteb import MTEBEncoder

    model = MTEBEncoder(Embedder.load("runs/tiny"))
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from conan_core.errors import ConanError

#: task type -> instruction (used for queries, and for every text of symmetric tasks)
TASK_TYPE_INSTRUCTIONS: dict[str, str] = {
    "Retrieval": "Given a question, retrieve passages that answer the question",
    "Reranking": "Given a query, retrieve documents relevant to it",
    "InstructionRetrieval": "Given a query and an instruction, retrieve relevant documents",
    "STS": "Retrieve semantically similar text",
    "PairClassification": "Retrieve texts that are semantically similar to the given text",
    "Classification": "Classify the given text",
    "MultilabelClassification": "Classify the given text",
    "Clustering": "Identify the main topic of the given text",
    "BitextMining": "Retrieve parallel sentences",
    "Summarization": "Given a summary, retrieve semantically similar summaries",
}
QUERY_TYPES = ("query",)
DOCUMENT_TYPES = ("document", "passage", "corpus")


def _prompt_kind(prompt_type: Any) -> str | None:
    """"query", "document" or None from mteb's PromptType enum (either version) or a string."""
    if prompt_type is None:
        return None
    value = str(getattr(prompt_type, "value", prompt_type)).lower()
    if value in QUERY_TYPES:
        return "query"
    if value in DOCUMENT_TYPES:
        return "document"
    raise ConanError(f"mteb prompt_type {prompt_type!r} is neither a query nor a document type")


def _task_type_from_name(task_name: str | None) -> str | None:
    """The task type of an mteb task name (needs mteb; None when it is not installed or unknown)."""
    if not task_name:
        return None
    try:
        import mteb
    except ImportError:
        return None
    try:
        return mteb.get_task(task_name).metadata.type
    except Exception:  # an unknown task name: fall back to the generic instruction
        return None


def texts_of(inputs: Any) -> list[str]:
    """Flatten mteb inputs to a list of strings: a list of strings, or an iterable of batches
    (dicts with a ``"text"`` list, as mteb >= 2's DataLoaders yield)."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, Sequence) and all(isinstance(t, str) for t in inputs):
        return list(inputs)
    out: list[str] = []
    for batch in inputs:
        if isinstance(batch, Mapping):
            if "text" not in batch:
                raise ConanError(f"mteb batch without a 'text' field (keys: {sorted(batch)}); only text "
                                 "inputs are supported")
            texts = batch["text"]
            out.extend([texts] if isinstance(texts, str) else list(texts))
        elif isinstance(batch, str):
            out.append(batch)
        else:
            raise ConanError(f"mteb input batch of type {type(batch).__name__}: expected a dict with 'text' "
                             "or a string")
    return out


class MTEBEncoder:
    """mteb encoder protocol around an Embedder (or anything with ``encode(texts, instruction=,
    batch_size=, dim=)`` and ``dim`` / ``query_instruction`` / ``mrl_dims`` / ``max_length``).

    ``dim`` truncates to an MRL prefix; ``instructions`` overrides entries of
    :data:`TASK_TYPE_INSTRUCTIONS`; ``task_instructions`` maps a task name to its own instruction.
    """

    def __init__(self, embedder, *, batch_size: int = 32, dim: int | None = None,
                 use_instructions: bool | None = None, instructions: Mapping[str, str] | None = None,
                 task_instructions: Mapping[str, str] | None = None, name: str | None = None):
        self.embedder = embedder
        self.batch_size = int(batch_size)
        self.dim = dim
        query_instruction = getattr(embedder, "query_instruction", "") or ""
        self.use_instructions = bool(query_instruction) if use_instructions is None else bool(use_instructions)
        self.instructions = dict(TASK_TYPE_INSTRUCTIONS)
        if query_instruction:  # retrieval queries get what training used
            self.instructions["Retrieval"] = query_instruction
        self.instructions.update(instructions or {})
        self.task_instructions = dict(task_instructions or {})
        self.name = name or f"conan_core/{getattr(getattr(embedder, 'source', None), 'name', 'embedder')}"

    # -- protocol
    def encode(self, inputs: Any = None, *, task_metadata: Any = None, hf_split: str | None = None,
               hf_subset: str | None = None, prompt_type: Any = None, task_name: str | None = None,
               sentences: Any = None, batch_size: int | None = None, **kwargs: Any) -> np.ndarray:
        """Embeddings float32 [N, dim] of the texts in ``inputs`` (DataLoader of ``{"text": [...]}``
        batches, or a list of strings), in order. See the module docstring for instructions."""
        if inputs is None:
            inputs = sentences
        if inputs is None:
            raise ConanError("MTEBEncoder.encode: no inputs given")
        texts = texts_of(inputs)
        if task_metadata is not None:
            task_name = getattr(task_metadata, "name", task_name)
            task_type = getattr(task_metadata, "type", None)
        else:
            task_type = _task_type_from_name(task_name)
        instruction = self.instruction_for(task_name, task_type, prompt_type)
        return self.embedder.encode(texts, instruction=instruction, batch_size=batch_size or self.batch_size,
                                    dim=self.dim)

    def instruction_for(self, task_name: str | None, task_type: str | None, prompt_type: Any) -> str | None:
        """The instruction for one call (None = plain text); see the module docstring."""
        kind = _prompt_kind(prompt_type)
        if not self.use_instructions or kind == "document":
            return None
        if task_name and task_name in self.task_instructions:
            return self.task_instructions[task_name]
        if task_type in self.instructions:
            return self.instructions[task_type]
        # unknown task type: queries get the retrieval instruction, symmetric texts none
        return self.instructions["Retrieval"] if kind == "query" else None

    @staticmethod
    def similarity(embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Cosine similarity matrix float32 [N1, N2]."""
        a = _unit(embeddings1)
        b = _unit(embeddings2)
        return a @ b.T

    @staticmethod
    def similarity_pairwise(embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Cosine of row i with row i, float32 [N]."""
        a = _unit(embeddings1)
        b = _unit(embeddings2)
        if a.shape != b.shape:
            raise ConanError(f"similarity_pairwise: shapes differ {a.shape} vs {b.shape}")
        return (a * b).sum(axis=1)

    # -- metadata
    def metadata(self) -> dict[str, Any]:
        """Model facts mteb records (embed dims incl. MRL, max tokens, parameters, instructions)."""
        emb = self.embedder
        model = getattr(emb, "model", None)
        n_params = int(sum(p.numel() for p in model.parameters())) if model is not None else None
        return {
            "name": self.name,
            "revision": None,
            "release_date": None,
            "languages": None,
            "n_parameters": n_params,
            "embed_dim": int(self.dim or getattr(emb, "dim", 0)) or None,
            "mrl_dims": list(getattr(emb, "mrl_dims", []) or []),
            "max_tokens": getattr(emb, "max_length", None),
            "similarity_fn_name": "cosine",
            "use_instructions": self.use_instructions,
            "framework": ["PyTorch"],
            "open_weights": True,
        }

    @property
    def mteb_model_meta(self) -> Any:
        """``mteb.ModelMeta`` when mteb is installed and accepts these fields, else the dict."""
        meta = self.metadata()
        try:
            from mteb import ModelMeta
        except ImportError:
            return meta
        fields = getattr(ModelMeta, "model_fields", {})
        try:
            return ModelMeta(**{k: v for k, v in meta.items() if k in fields})
        except Exception:  # an mteb version with other required fields: the plain dict still informs
            return meta


def _unit(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

