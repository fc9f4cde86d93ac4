"""Evaluating an :class:`~conan_core.embedder.Embedder` with `mteb
<https://github.com/embeddings-benchmark/mteb>`_ (optional: ``pip install conan-core[mteb]``).

Three parts:

* :class:`MTEBEncoder`, the encoder protocol around an Embedder. One ``encode`` serves both
  protocols: mteb >= 2 (``encode(inputs: DataLoader, *, task_metadata, hf_split, hf_subset,
  prompt_type=None)``, batches are dicts with a ``"text"`` list) and mteb 1.x (``encode(sentences,
  *, task_name, prompt_type=None)``).
* :meth:`MTEBEncoder.mteb_model_meta`: an ``mteb.ModelMeta`` whose ``name`` says which model
  (``conan_core/<run>-<stage>`` or ``conan_core/<export dir>``) and whose ``revision`` is the first
  12 hex digits of :meth:`Embedder.fingerprint` (weights, settings, tokenizer). mteb stores results
  under ``results/<name>/<revision>/``, so two models, or one run retrained in place, never share
  cached scores. Options that change the embeddings without changing the weights (an MRL ``dim``,
  instruction overrides) go to ``experiment_kwargs``, a sub-folder of their own.
* :func:`local_task` turns conan's own evaluation files (a retrieval directory with
  ``queries.jsonl`` / ``corpus.jsonl`` / ``qrels.jsonl``, or an ``sts.jsonl``) into an mteb task,
  and :func:`resolve_tasks` accepts such paths next to mteb task names, loading every task's data
  with the Hugging Face hub switched offline: a task whose data is not already on this machine is
  a :class:`MTEBDataMissingError`, never a download.

Instructions (RECIPE §7 leaves the templates open; these follow the common E5/NV-Embed usage):
queries (``prompt_type`` "query") get an instruction, documents ("document" / "passage") never do,
and symmetric tasks (no ``prompt_type``: STS, classification, clustering ...) get their task-type
instruction on every text. The instruction is, first found: ``task_instructions[task name]``, the
task's own ``metadata.prompt`` (a string, or the entry for this prompt type), the entry of
:data:`TASK_TYPE_INSTRUCTIONS` for the task type, where a retrieval query uses the run's own
``query_instruction`` (what training used). When the run trained without any instruction
(``query_instruction`` empty) no instruction is used anywhere, unless ``use_instructions=True``.

Usage::

    import mteb
    from conan_core import Embedder
    from conan_core.eval.mteb import MTEBEncoder, resolve_tasks

    model = MTEBEncoder(Embedder.load("runs/tiny"))
    mteb.evaluate(model, resolve_tasks(["STSBenchmark", "runs/tiny/data/eval/retrieval"]),
                  cache=mteb.ResultCache("runs/tiny/eval/mteb"))

or ``conan eval runs/tiny --mteb STSBenchmark --mteb runs/tiny/data/eval/retrieval``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
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


class MTEBError(ConanError):
    """mteb is missing, a task name is unknown, or an encoder cannot be described to mteb."""


class MTEBDataMissingError(MTEBError, FileNotFoundError):
    """An mteb task whose data is not on this machine (nothing is downloaded)."""


def require_mteb():
    """The ``mteb`` module, or :class:`MTEBError` with the install command."""
    try:
        import mteb
    except ImportError:
        raise MTEBError("mteb is not installed; install it with `pip install 'conan-core[mteb]'` "
                        "(or `pip install 'mteb>=2'`)") from None
    return mteb


def _task_info(task_name: str | None) -> tuple[str | None, Any]:
    """(task type, task prompt) of an mteb task name; (None, None) without mteb or for an unknown name."""
    if not task_name:
        return None, None
    try:
        import mteb
    except ImportError:
        return None, None
    try:
        meta = mteb.get_task(task_name).metadata
    except Exception:  # any unknown name (mteb raises KeyError or ValueError by version): generic instruction
        return None, None
    return meta.type, getattr(meta, "prompt", None)


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
    ``name`` (``organisation/model``), ``revision`` and ``languages`` (ISO 639-3 + script, e.g.
    ``eng-Latn``) go to :attr:`mteb_model_meta`; by default the name comes from the embedder's
    source directory and the revision from its fingerprint (see the module docstring).
    """

    def __init__(self, embedder, *, batch_size: int = 32, dim: int | None = None,
                 use_instructions: bool | None = None, instructions: Mapping[str, str] | None = None,
                 task_instructions: Mapping[str, str] | None = None, name: str | None = None,
                 revision: str | None = None, languages: Sequence[str] | None = None):
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
        # what changes the embeddings without changing the weights: recorded so that mteb keeps
        # these results apart from the plain model's
        self.experiment: dict[str, Any] = {}
        if dim is not None:
            self.experiment["dim"] = int(dim)
        if use_instructions is not None:
            self.experiment["use_instructions"] = self.use_instructions
        if instructions or task_instructions:
            blob = json.dumps([dict(instructions or {}), dict(task_instructions or {})], sort_keys=True)
            self.experiment["instructions"] = hashlib.sha256(blob.encode()).hexdigest()[:8]
        self.name = name or default_model_name(embedder)
        if "/" not in self.name:
            raise MTEBError(f"MTEBEncoder name {self.name!r} must look like 'organisation/model' (mteb's rule)")
        self.revision = revision
        self.languages = list(languages) if languages is not None else None

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
            task_prompt = getattr(task_metadata, "prompt", None)
        else:
            task_type, task_prompt = _task_info(task_name)
        instruction = self.instruction_for(task_name, task_type, prompt_type, task_prompt)
        return self.embedder.encode(texts, instruction=instruction, batch_size=batch_size or self.batch_size,
                                    dim=self.dim)

    def instruction_for(self, task_name: str | None, task_type: str | None, prompt_type: Any,
                        task_prompt: Any = None) -> str | None:
        """The instruction for one call (None = plain text); see the module docstring."""
        kind = _prompt_kind(prompt_type)
        if not self.use_instructions or kind == "document":
            return None
        if task_name and task_name in self.task_instructions:
            return self.task_instructions[task_name]
        if isinstance(task_prompt, str) and task_prompt:
            return task_prompt
        if isinstance(task_prompt, Mapping) and task_prompt.get(kind or "query"):
            return str(task_prompt[kind or "query"])
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
    def model_revision(self) -> str:
        """``revision`` if given, else the first 12 hex digits of the embedder's ``fingerprint()``,
        computed on first use and kept: an MTEBEncoder stands for the weights it first saw, so wrap
        the embedder anew after changing them (a run retrained in place gets a new revision)."""
        if self.revision:
            return self.revision
        fingerprint = getattr(self.embedder, "fingerprint", None)
        if fingerprint is None:
            raise MTEBError(f"{type(self.embedder).__name__} has no fingerprint(); pass MTEBEncoder(..., "
                            "revision=...) so that mteb can tell versions of this encoder apart")
        self.revision = str(fingerprint())[:12]
        return self.revision

    def metadata(self) -> dict[str, Any]:
        """Model facts mteb records (name, revision, languages, embed dims incl. MRL, max tokens,
        parameters, instructions, experiment settings) as a plain dict; needs no mteb."""
        emb = self.embedder
        model = getattr(emb, "model", None)
        n_params = int(sum(p.numel() for p in model.parameters())) if model is not None else None
        memory = None
        if model is not None:
            memory = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 3)
        full = int(getattr(emb, "dim", 0) or 0) or None
        mrl = sorted({int(d) for d in (getattr(emb, "mrl_dims", []) or [])} | ({full} if full else set()))
        return {
            "name": self.name,
            "revision": self.model_revision(),
            "release_date": None,
            "languages": self.languages,
            "n_parameters": n_params,
            "memory_usage_mb": memory,
            "embed_dim": int(self.dim) if self.dim else (mrl if len(mrl) > 1 else full),
            "mrl_dims": list(getattr(emb, "mrl_dims", []) or []),
            "max_tokens": getattr(emb, "max_length", None),
            "similarity_fn_name": "cosine",
            "use_instructions": self.use_instructions,
            "framework": ["PyTorch"],
            "open_weights": True,
            "experiment_kwargs": dict(self.experiment) or None,
        }

    @property
    def mteb_model_meta(self):
        """This encoder's ``mteb.ModelMeta`` (mteb reads this attribute to name and cache results).

        Raises :class:`MTEBError` when mteb is not installed or rejects a field (e.g. a language
        code that is not ISO 639-3 + script)."""
        require_mteb()
        from mteb.models.model_meta import ModelMeta

        meta = self.metadata()
        meta.pop("mrl_dims")
        try:
            return ModelMeta(loader=None, license=None, public_training_code=None, public_training_data=None,
                             training_datasets=None, modalities=["text"], model_type=["dense"], **meta)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise MTEBError(f"mteb rejects the model metadata of {self.name}: {exc}") from None


def default_model_name(embedder) -> str:
    """``conan_core/<run>-<stage>`` for a run's ``<run>/<stage>/final``, ``conan_core/<dir>`` for an
    export or other directory, ``conan_core/embedder`` without a source. Characters outside
    ``[A-Za-z0-9._-]`` become ``_`` (the name is a directory name in mteb's cache)."""
    source = getattr(embedder, "source", None)
    if source is None:
        label = "embedder"
    else:
        source = Path(source)
        if source.name == "final" and source.parent.parent.name:
            label = f"{source.parent.parent.name}-{source.parent.name}"
        else:
            label = source.name or "embedder"
    return "conan_core/" + re.sub(r"[^A-Za-z0-9._-]", "_", label)


# ----------------------------------------------------------------------------- tasks

@contextmanager
def hub_offline():
    """Within the block, the Hugging Face hub and ``datasets`` are offline (loads come from the local
    cache or fail). The environment variables alone are read once at import, so the already imported
    modules' switches are set too; everything is restored afterwards."""
    import sys

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in names}
    switches = [("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                ("datasets.config", "HF_DATASETS_OFFLINE")]
    saved = []
    for module_name, attr in switches:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, True)
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _digest(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def local_task(path: str | Path, *, name: str | None = None, languages: Sequence[str] = ("und-Zyyy",)):
    """An mteb task over conan's evaluation files at ``path``, data loaded.

    * a directory with ``queries.jsonl``, ``corpus.jsonl``, ``qrels.jsonl`` (or a data / eval root
      holding ``eval/retrieval/``): a ``Retrieval`` task, main score nDCG@10;
    * an ``sts.jsonl`` file (or a root holding it): an ``STS`` task, main score cosine Spearman.

    The task name defaults to ``Local<Kind>-<dir or file stem>-<8 hex of the files' sha256>``
    and the dataset revision is the full digest, so edited data is never served stale results
    from mteb's cache. ``languages`` are the task's ISO 639-3 + script codes (default
    ``und-Zyyy``: undetermined). Bad files raise :class:`~conan_core.eval.data.EvalDataError`
    naming file and line.
    """
    from conan_core.eval.data import EvalDataError, MissingEvalDataError, load_retrieval, load_sts

    path = Path(path)
    if not path.exists():
        raise MissingEvalDataError(f"{path}: no such file or directory (expected a retrieval directory "
                                   "with queries.jsonl, corpus.jsonl, qrels.jsonl, or an sts.jsonl file)")
    classes = _local_task_classes()
    try:
        data = load_retrieval(path)
        kind = "Retrieval"
        files = [Path(data.source) / n for n in ("queries.jsonl", "corpus.jsonl", "qrels.jsonl")]
    except MissingEvalDataError:
        try:
            data = load_sts(path)
        except MissingEvalDataError:
            raise MissingEvalDataError(
                f"{path}: neither a retrieval directory (queries.jsonl, corpus.jsonl, qrels.jsonl) nor an "
                "sts.jsonl file; point --mteb at one of those, or give an mteb task name") from None
        kind = "STS"
        files = [Path(data.source)]
        if min(data.scores) == max(data.scores):
            raise EvalDataError(f"{data.source}: every score is {data.scores[0]}; a correlation needs at least "
                                "two different gold scores")
    digest = _digest(*files)
    stem = files[0].parent.name if kind == "Retrieval" else Path(data.source).stem
    task_name = name or f"Local{kind}-{re.sub(r'[^A-Za-z0-9._-]', '_', stem)}-{digest[:8]}"
    main_score = "ndcg_at_10" if kind == "Retrieval" else "cosine_spearman"
    # mteb reads ``metadata`` from the class (unloading a task drops instance-level metadata), so
    # each local task is an instance of its own subclass carrying that task's metadata
    task_class = type(f"Local{kind}Task", (classes[kind],), {
        "metadata": _metadata(task_name, kind, digest, data.source, list(languages), main_score)})
    return task_class(data)


def _metadata(task_name: str, kind: str, digest: str, source: str, languages: list[str], main_score: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(name=task_name, description=f"conan_core evaluation files at {source}", type=kind,
                        category="t2t", modalities=["text"], eval_splits=["test"], eval_langs=languages,
                        main_score=main_score, dataset={"path": source, "revision": digest})


@functools.cache
def _local_task_classes() -> dict[str, type]:
    """The two local task classes, defined on first use (mteb is imported only then)."""
    require_mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    class LocalData:
        """Holds a task's conan eval data and builds mteb's ``dataset`` from it once, on the first
        ``load_data`` (the subclass's ``test_split``: one ``test`` split, subset ``default``)."""

        def __init__(self, data):
            self._data = data
            super().__init__()

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if not self.data_loaded:
                self.dataset = {"default": {"test": self.test_split(self._data)}}
                self.data_loaded = True

    class LocalRetrievalTask(LocalData, AbsTaskRetrieval):
        """A retrieval task over ``RetrievalData``; a subclass per task sets ``metadata``."""

        @staticmethod
        def test_split(d) -> dict:
            return {
                "corpus": Dataset.from_dict({"id": list(d.doc_ids), "text": list(d.doc_texts)}),
                "queries": Dataset.from_dict({"id": list(d.query_ids), "text": list(d.query_texts)}),
                # mteb's metrics take integer grades; conan's qrels allow any number > 0 as relevant
                "relevant_docs": {q: {doc: int(round(s)) for doc, s in docs.items()} for q, docs in d.qrels.items()},
                "top_ranked": None,
            }

    class LocalSTSTask(LocalData, AbsTaskSTS):
        """An STS task over ``STSData`` (scores normalised from the file's own min / max); a subclass
        per task sets ``metadata``."""

        def __init__(self, data):
            self.min_score, self.max_score = min(data.scores), max(data.scores)
            super().__init__(data)

        @staticmethod
        def test_split(d):
            return Dataset.from_dict(
                {"sentence1": list(d.s1), "sentence2": list(d.s2), "score": [float(x) for x in d.scores]})

    return {"Retrieval": LocalRetrievalTask, "STS": LocalSTSTask}


def resolve_tasks(specs: Sequence[str], *, languages: Sequence[str] = ("und-Zyyy",)) -> list:
    """mteb tasks for ``specs``, each data loaded: an existing path is a :func:`local_task`; anything
    else is an mteb task name whose data must already be in the local Hugging Face cache (loaded
    under :func:`hub_offline`). Unknown names raise :class:`MTEBError` with close matches; absent
    data raises :class:`MTEBDataMissingError` naming the task and its dataset."""
    mteb = require_mteb()
    tasks = []
    for spec in specs:
        if Path(spec).exists():
            tasks.append(local_task(spec, languages=languages))
            continue
        try:
            task = mteb.get_task(spec)
        except (KeyError, ValueError) as exc:  # mteb's message carries its own "did you mean"
            hint = str(exc.args[0] if exc.args else exc).strip()
            raise MTEBError(f"--mteb {spec!r}: neither an existing path nor an mteb task name ({hint}); "
                            "`python -c \"import mteb; print(mteb.get_tasks())\"` lists the tasks") from None
        dataset = task.metadata.dataset
        with hub_offline():
            try:
                task.load_data()
            except (OSError, ValueError) as exc:  # ConnectionError / FileNotFoundError / DatasetNotFoundError
                raise MTEBDataMissingError(
                    f"mteb task {spec}: its dataset {dataset.get('path')} (revision {dataset.get('revision')}) is "
                    f"not available on this machine ({type(exc).__name__}: {str(exc)[:200]}); nothing is "
                    "downloaded here. Fetch it once where there is network (python -c \"import mteb; "
                    f"mteb.get_task('{spec}').load_data()\") into the Hugging Face cache that HF_HOME points "
                    "at, or evaluate on local files: --mteb DIR_OR_sts.jsonl") from None
        tasks.append(task)
    return tasks


def _unit(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

