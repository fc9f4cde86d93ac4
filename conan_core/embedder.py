"""``Embedder``: load a trained model (a run, a stage's ``final/`` or an export) and encode texts.

::

    from conan_core import Embedder

    emb = Embedder.load("runs/tiny")                  # the latest finished stage of a run
    q = emb.encode_queries(["what is a soft mask?"])  # float32 [1, dim], unit rows
    d = emb.encode_corpus(["The soft mask opens ..."])
    scores = q @ d.T                                  # cosine similarities

What ``encode`` does, and why:

* texts are tokenized once (``max_length`` truncation, ``<s> ... </s>`` added by the tokenizer);
  a text far longer than ``max_length`` tokens can cover is cut before tokenising, with a check
  that the kept ids equal those of the whole text (a 10 MB line costs what a page costs); rows are
  sorted by token length (longest first) so each batch pads little, and returned in the input order;
* the attention mask is the one the final stage ended with (``embedder.json``: bidirectional for
  the embedding stages); the pooler is the stage's (trainable poolers load ``pooler.safetensors``);
* ``torch.inference_mode``; bf16 weights on CUDA, float32 on CPU; pooling and normalisation in
  float32; the result is a float32 numpy array ``[len(texts), dim]``;
* ``dim`` truncates to a Matryoshka prefix (``mrl_dims`` lists the trained ones) and re-normalises;
* ``encode([])`` is ``float32 [0, dim]``; an empty string still has ``<s> </s>``, so its embedding
  is a finite vector like any other.

Queries can carry an instruction: ``"<instruct>" + instruction + "<query>" + text`` (the format of
the training collator, :func:`format_query`); with ``exclude_instruction`` poolers the instruction
tokens are left out of pooling.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from conan_core.data.text import INSTRUCT, PASSAGE, QUERY, format_query  # noqa: F401  (re-exported)
from conan_core.errors import ConanError

#: Stages that can provide an embedder, most trained first (Embedder.load on a run picks the first done).
STAGE_ORDER = ("supervised", "weak", "sft", "pretrain")
EMBEDDER_FILE = "embedder.json"
POOLER_WEIGHTS = "pooler.safetensors"
#: A text longer than ``CUT_CHARS_PER_TOKEN * max_length + CUT_MIN_SLACK`` characters is cut before
#: tokenising (checked, see ``Embedder._tokenize_cut``). Subword tokens average 3-5 characters, so
#: the first cut nearly always keeps enough text; a failed check only costs a retry.
CUT_CHARS_PER_TOKEN = 12
CUT_MIN_SLACK = 256


class EmbedderLoadError(ConanError, FileNotFoundError):
    """A path that holds no loadable model (the message says what was looked for)."""


@dataclass
class EmbedderSettings:
    """The contents of ``embedder.json`` (see docs/RUNDIR.md), every field with its default."""

    pooler: dict = field(default_factory=lambda: {"type": "mean"})
    mask: dict = field(default_factory=lambda: {"type": "bidirectional"})
    alpha: float = 1.0
    max_length: int = 512
    query_instruction: str = ""
    normalize: bool = True
    mrl_dims: list[int] = field(default_factory=list)
    stage: str | None = None

    @classmethod
    def from_dict(cls, data: dict, source: str = EMBEDDER_FILE) -> "EmbedderSettings":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConanError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}")
        out = cls(**data)
        if isinstance(out.pooler, str):
            out.pooler = {"type": out.pooler}
        if isinstance(out.mask, str):
            out.mask = {"type": out.mask}
        out.mrl_dims = sorted(int(d) for d in out.mrl_dims)
        out.max_length = int(out.max_length)
        if out.max_length < 2:
            raise ConanError(f"{source}: max_length must be >= 2 (got {out.max_length})")
        return out

    def to_dict(self) -> dict:
        return {"pooler": self.pooler, "mask": self.mask, "alpha": self.alpha, "max_length": self.max_length,
                "query_instruction": self.query_instruction, "normalize": self.normalize,
                "mrl_dims": list(self.mrl_dims), "stage": self.stage}


# ----------------------------------------------------------------------------- locating a model

def resolve_model_dir(path: str | Path) -> tuple[Path, Path | None]:
    """(model directory, run directory or None) for a run dir, a stage dir, a final dir or an export.

    A run directory gives ``<run>/<stage>/final`` of the first stage of :data:`STAGE_ORDER` whose
    ``DONE`` exists.
    """
    path = Path(path)
    if not path.exists():
        raise EmbedderLoadError(f"{path}: no such directory (expected a run directory, a stage's final/ "
                                "directory or an export directory)")
    if (path / "config.json").is_file():
        run = path.parent.parent if path.name == "final" and (path.parent.parent / "config.yaml").is_file() else None
        return path, run
    if (path / "final" / "config.json").is_file():  # a stage directory
        run = path.parent if (path.parent / "config.yaml").is_file() else None
        return path / "final", run
    done = [s for s in STAGE_ORDER if (path / s / "DONE").is_file()]
    for stage in done:
        final = path / stage / "final"
        if (final / "config.json").is_file():
            return final, path
        raise EmbedderLoadError(f"{final}: stage {stage} is DONE but its final/ directory has no config.json")
    looked = ", ".join(f"{s}/DONE" for s in STAGE_ORDER)
    raise EmbedderLoadError(f"{path}: no model found: not a model directory (config.json), and none of "
                            f"{looked} exists; finish a stage first (conan run ...) or pass its final/ dir")


def _read_settings(model_dir: Path, run_dir: Path | None) -> EmbedderSettings:
    """embedder.json of ``model_dir``; else, for an export re-saved by another library, the copy its
    config.json keeps (``embedder``); else defaults completed from the run's config.yaml."""
    file = model_dir / EMBEDDER_FILE
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConanError(f"{file}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        return EmbedderSettings.from_dict(data, str(file))
    kept = _exported_settings(model_dir)
    if kept is not None:
        return EmbedderSettings.from_dict(kept, f"{model_dir / 'config.json'} (embedder)")
    settings = EmbedderSettings()
    # a model without embedder.json (pretrain / sft final): take max_length and the instruction from
    # the run config when there is one, and pool its bidirectional hidden states by the mean
    cfg_file = run_dir / "config.yaml" if run_dir is not None else None
    if cfg_file is not None and cfg_file.is_file():
        import yaml

        cfg = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
        stage = model_dir.parent.name
        sec = cfg.get(stage) if isinstance(cfg.get(stage), dict) else {}
        if isinstance(sec.get("max_length"), int):
            settings.max_length = sec["max_length"]
        sup = cfg.get("supervised") if isinstance(cfg.get("supervised"), dict) else {}
        settings.query_instruction = str(sup.get("query_instruction") or "")
        settings.stage = stage
    return settings


def _exported_settings(model_dir: Path) -> dict | None:
    """The ``embedder`` entry of an export's config.json (see conan_core.backbones.remote_code), or None."""
    file = model_dir / "config.json"
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    kept = cfg.get("embedder") if isinstance(cfg, dict) else None
    return kept if isinstance(kept, dict) else None


def _pooler_weights(model_dir: Path) -> Path:
    """``pooler.safetensors`` of ``model_dir``; in an export re-saved by sentence-transformers (which
    writes no such file) the copy in its ``1_ConanPooling/`` module."""
    file = model_dir / POOLER_WEIGHTS
    module_copy = model_dir / "1_ConanPooling" / POOLER_WEIGHTS
    return module_copy if not file.is_file() and module_copy.is_file() else file


def _find_tokenizer_dir(model_dir: Path, run_dir: Path | None) -> Path:
    for cand in (model_dir, *([run_dir / "tokenizer"] if run_dir is not None else []),
                 model_dir.parent.parent / "tokenizer"):
        if (cand / "tokenizer.json").is_file():
            return cand
    raise EmbedderLoadError(f"{model_dir}: no tokenizer.json there or in the run's tokenizer/ directory")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype: Any, device: str):
    import torch

    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                 "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise ConanError(f"dtype {dtype!r} is not one of {sorted(names)}")
        return names[dtype]
    return dtype


def load_backbone(model_dir: Path):
    """The encoder module of ``model_dir``: ``ConanModel`` for ``model_type == "conan"`` (a stage's
    final/), the export classes for an export (``conan_embedder``, ``conan_hf_embedder``: see
    :mod:`conan_core.backbones.remote_code`), any other transformers causal LM wrapped in
    :class:`~conan_core.backbones.hf.HFDecoder`. float32, CPU."""
    import torch

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    with quiet_transformers():
        if cfg.get("model_type") in ("conan_embedder", "conan_hf_embedder"):
            from conan_core.backbones.remote_code import EXPORT_MODEL_TYPES

            return EXPORT_MODEL_TYPES[cfg["model_type"]][1].from_pretrained(str(model_dir), dtype=torch.float32)
        if cfg.get("model_type") == "conan":
            import conan_core.model  # noqa: F401  (registers "conan" with the Auto classes)
            from conan_core.model import ConanModel

            return ConanModel.from_pretrained(str(model_dir), dtype=torch.float32)
        from transformers import AutoModelForCausalLM

        from conan_core.backbones.hf import HFDecoder

        return HFDecoder(AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                              attn_implementation="sdpa"))


@contextmanager
def quiet_transformers():
    """Silence transformers' load report and weight-loading bar for the block: a stage's final/
    holds the LM head too, which the encoder does not load, and that is expected, not a warning."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------- the embedder

class Embedder:
    """A model + tokenizer + pooler that turns texts into embeddings (see the module docstring).

    Attributes: ``settings`` (:class:`EmbedderSettings`), ``dim`` (full embedding size),
    ``mrl_dims``, ``query_instruction``, ``max_length``, ``source`` (the model directory).
    """

    def __init__(self, model, tokenizer, pooler, settings: EmbedderSettings, *, device: str | None = None,
                 dtype: Any = None, source: str | Path | None = None):
        from conan_core.registries import REGISTRIES

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooler = pooler.eval()
        self.settings = settings
        self.mask = REGISTRIES["masks"].build(settings.mask, "embedder.json mask")
        self.source = Path(source) if source is not None else None
        self.dim = int(getattr(pooler, "output_size", None) or model.config.hidden_size)
        self._device = None
        self._dtype = None
        self.to(device, dtype)

    # -- loading
    @classmethod
    def load(cls, path: str | Path, device: str | None = None, dtype: Any = None) -> "Embedder":
        """Load from a run directory (latest finished stage: supervised > weak > sft > pretrain), a
        stage's ``final/`` directory, or an export directory. ``device`` None = CUDA when available;
        ``dtype`` None = bf16 on CUDA, float32 on CPU."""
        import torch

        from conan_core.registries import REGISTRIES
        from conan_core.tokenizer import load_tokenizer

        model_dir, run_dir = resolve_model_dir(path)
        settings = _read_settings(model_dir, run_dir)
        model = load_backbone(model_dir)
        tokenizer = load_tokenizer(_find_tokenizer_dir(model_dir, run_dir))
        pooler = REGISTRIES["poolers"].build(settings.pooler, "embedder.json pooler",
                                             hidden_size=int(model.config.hidden_size))
        weights = _pooler_weights(model_dir)
        if weights.is_file():
            from safetensors.torch import load_file

            pooler.load_state_dict(load_file(str(weights)))
        elif any(True for _ in pooler.parameters()):
            raise EmbedderLoadError(f"{model_dir}: pooler {settings.pooler['type']!r} has weights but "
                                    f"{POOLER_WEIGHTS} is missing")
        pooler.to(torch.float32)
        from conan_core.model.finite import require_finite

        require_finite(model, model_dir, what="Embedder.load")  # NaN weights would encode NaN silently
        require_finite(pooler, model_dir, what="Embedder.load")
        return cls(model, tokenizer, pooler, settings, device=device, dtype=dtype, source=model_dir)

    def save(self, out_dir: str | Path) -> Path:
        """Write a directory that :meth:`load` reads back: the backbone (``save_pretrained``,
        float32), the tokenizer, ``embedder.json`` and, for a pooler with weights,
        ``pooler.safetensors``. Returns ``out_dir``."""
        import torch

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = self.model
        device, dtype = self._device, self._dtype
        self.to("cpu", torch.float32)
        try:
            model.save_pretrained(str(out))
            state = {k: v.detach().contiguous() for k, v in self.pooler.state_dict().items()}
        finally:
            self.to(device, dtype)
        self.tokenizer.save_pretrained(str(out))
        (out / EMBEDDER_FILE).write_text(json.dumps(self.settings.to_dict(), indent=2) + "\n", encoding="utf-8")
        if state:
            from safetensors.torch import save_file

            save_file(state, str(out / POOLER_WEIGHTS))
        return out

    def to(self, device: str | None = None, dtype: Any = None) -> "Embedder":
        """Move the model (``dtype``: None = keep the current one on the same device, else bf16 on
        CUDA and float32 on CPU); the pooler stays float32."""
        device = str(device) if device is not None else (self._device or _default_device())
        if dtype is not None:
            dtype = _resolve_dtype(dtype, device)
        elif self._dtype is not None and device == self._device:
            dtype = self._dtype
        else:
            dtype = _resolve_dtype(None, device)
        if device != self._device or dtype != self._dtype:
            self.model.to(device=device, dtype=dtype)
            self.pooler.to(device=device)
            self._device, self._dtype = device, dtype
        return self

    @property
    def device(self) -> str:
        return self._device

    @property
    def dtype(self):
        return self._dtype

    @property
    def max_length(self) -> int:
        return self.settings.max_length

    @property
    def query_instruction(self) -> str:
        return self.settings.query_instruction

    @property
    def mrl_dims(self) -> list[int]:
        return list(self.settings.mrl_dims)

    # -- tokenization
    def tokenize(self, texts: Sequence[str], instruction: str | None = None) -> tuple[list[list[int]], list[int]]:
        """Token ids per text (``<s> ... </s>``, at most ``max_length``) and, per text, how many
        leading tokens belong to the instruction (``<s>``, ``<instruct>``, the instruction and
        ``<query>``; 0 without an instruction). Truncation keeps the start of the sequence.

        The ids are those of tokenising each whole text and truncating to ``max_length``, but a
        text longer than a character budget is cut before tokenising, so a 10 MB line costs what
        its first few thousand characters cost (see :meth:`_tokenize_cut`).
        """
        from conan_core.data.text import clean_text

        budget = self._first_char_budget()
        inputs = [format_query(clean_text(t), instruction) if len(t) <= budget else None for t in texts]
        ids: list[list[int] | None] = [None] * len(texts)
        whole = [i for i, x in enumerate(inputs) if x is not None]
        if whole:
            enc = self._call_tokenizer([inputs[i] for i in whole])["input_ids"]
            for i, row in zip(whole, enc):
                ids[i] = list(row)
        long = [i for i, x in enumerate(inputs) if x is None]
        if long:
            for i, row in zip(long, self._tokenize_cut([texts[i] for i in long], instruction)):
                ids[i] = row
        n_prefix = [0] * len(ids)
        if instruction:
            query_id = self.tokenizer.convert_tokens_to_ids(QUERY)
            for i, row in enumerate(ids):
                # the first <query> marker closes the instruction (a <query> typed inside the
                # instruction text would end it earlier, which is what the tokens say)
                n_prefix[i] = row.index(query_id) + 1 if query_id in row else len(row)
        fallback = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else \
            self.tokenizer.eos_token_id
        for row in ids:
            if not row:  # a tokenizer without special tokens: never feed an empty row
                row.append(fallback if fallback is not None else 0)
        return ids, n_prefix

    def _call_tokenizer(self, inputs: list[str], offsets: bool = False) -> dict:
        return self.tokenizer(inputs, add_special_tokens=True, truncation=True, max_length=self.max_length,
                              padding=False, return_attention_mask=False, return_offsets_mapping=offsets,
                              return_special_tokens_mask=offsets)

    def _first_char_budget(self) -> int:
        """Characters of a text tokenised on the first try: :data:`CUT_CHARS_PER_TOKEN` per token of
        ``max_length`` (a slow tokenizer, which has no offsets to check a cut with, gets no cut)."""
        if not getattr(self.tokenizer, "is_fast", False):
            return sys.maxsize
        return CUT_CHARS_PER_TOKEN * self.max_length + CUT_MIN_SLACK

    def _tokenize_cut(self, texts: list[str], instruction: str | None) -> list[list[int]]:
        """Ids of texts longer than the first budget, each tokenised from a cut prefix.

        A cut text with budget ``b`` is accepted when (1) its truncated row is full (``max_length``
        ids: the text after the cut could only add tokens past the truncation point), (2) its last
        kept token ends at least ``b / 2`` characters before the cut, and (3) cutting at ``3b / 4``
        instead gives the same ids, so the kept tokens did not depend on the right-hand context
        that differs between the two cuts. Otherwise the budget grows fourfold and the text is
        tokenised again; once the budget covers the whole text it is tokenised whole. The result is
        identical to tokenising the whole text as long as no token depends on text more than
        ``b / 4`` characters to its right (true for tokenizers that pre-split at whitespace or
        punctuation whenever such a split falls in that window, and for BPE merges within a word,
        which are decided locally).
        """
        from conan_core.data.text import clean_text

        out: list[list[int] | None] = [None] * len(texts)
        pending = list(range(len(texts)))
        budget = self._first_char_budget()
        while pending:
            retry = []
            whole = [i for i in pending if len(texts[i]) <= budget]
            cut = [i for i in pending if len(texts[i]) > budget]
            if whole:
                enc = self._call_tokenizer([format_query(clean_text(texts[i]), instruction) for i in whole])
                for i, row in zip(whole, enc["input_ids"]):
                    out[i] = list(row)
            if cut:
                # clean_text after the cut: a surrogate pair split by the cut becomes U+FFFD, which
                # only ever sits in the discarded half of the budget
                first = [format_query(clean_text(texts[i][:budget]), instruction) for i in cut]
                second = [format_query(clean_text(texts[i][:3 * budget // 4]), instruction) for i in cut]
                enc = self._call_tokenizer(first + second, offsets=True)
                for j, i in enumerate(cut):
                    row, other = list(enc["input_ids"][j]), list(enc["input_ids"][len(cut) + j])
                    ends = [end for (_, end), special in zip(enc["offset_mapping"][j], enc["special_tokens_mask"][j])
                            if not special]
                    settled = (len(row) == self.max_length and row == other
                               and (not ends or ends[-1] <= len(first[j]) - budget // 2))
                    if settled:
                        out[i] = row
                    else:
                        retry.append(i)
            pending = retry
            budget *= 4
        return out

    # -- encoding
    def encode(self, texts: Sequence[str] | str, *, batch_size: int = 32, instruction: str | None = None,
               normalize: bool | None = None, dim: int | None = None, device: str | None = None,
               dtype: Any = None, show_progress: bool | None = None, packing: bool = False) -> np.ndarray:
        """Embeddings of ``texts``: float32 numpy ``[len(texts), dim or self.dim]``, input order.

        ``instruction`` is prepended (query format, :func:`format_query`); ``normalize`` None =
        ``embedder.json``'s (true by default): unit L2 rows; ``dim`` keeps the first ``dim``
        coordinates (Matryoshka) and re-normalises; ``show_progress`` None = a tqdm bar when there is
        more than one batch and stderr is a terminal or there are more than 1000 texts. A single
        string is treated as a list of one. ``packing`` runs each batch as packed rows of its longest
        text (:mod:`conan_core.model.packing`; the same embeddings to float rounding, no padding:
        batches are sorted by length, so a batch pads little, yet on the 2-core CPU the packed
        forward measured 1.15-1.2x the padded one on the demo's mixed lengths, README benchmarks).
        """
        import torch

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
            raise ConanError(f"encode: texts[{bad}] is a {type(texts[bad]).__name__}, expected str")
        if batch_size < 1:
            raise ConanError(f"encode: batch_size must be >= 1 (got {batch_size})")
        out_dim = self.dim if dim is None else int(dim)
        if not 1 <= out_dim <= self.dim:
            raise ConanError(f"encode: dim must be in [1, {self.dim}] (trained MRL dims: {self.mrl_dims}), got {dim}")
        normalize = self.settings.normalize if normalize is None else bool(normalize)
        if device is not None or dtype is not None:
            self.to(device, dtype)
        if not texts:
            return np.zeros((0, out_dim), dtype=np.float32)

        ids, n_prefix = self.tokenize(texts, instruction)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: OOM shows at once
        n_batches = math.ceil(len(order) / batch_size)
        if show_progress is None:
            show_progress = n_batches > 1 and (sys.stderr.isatty() or len(texts) > 1000)
        starts = range(0, len(order), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, total=n_batches, desc="encode", unit="batch")
        out = np.empty((len(texts), out_dim), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            for start in starts:
                rows = order[start:start + batch_size]
                emb = self._embed_batch([ids[i] for i in rows], [n_prefix[i] for i in rows], pad_id, packing)
                emb = emb[:, :out_dim]
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1, eps=1e-12)
                out[rows] = emb.cpu().numpy()
        return out

    def _embed_batch(self, rows: list[list[int]], n_prefix: list[int], pad_id: int, packing: bool = False):
        """Pooled float32 [B, dim] of right-padded rows (instruction tokens out of pool_mask), from one
        padded forward or, with ``packing``, one packed forward."""
        import torch

        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, :len(r)] = torch.tensor(r, dtype=torch.long)
            attention[b, :len(r)] = 1
        pool_mask = attention.clone()
        for b, n in enumerate(n_prefix):
            pool_mask[b, :n] = 0
        dev = self._device
        input_ids, attention, pool_mask = input_ids.to(dev), attention.to(dev), pool_mask.to(dev)
        if packing:
            from conan_core.model.packing import packed_hidden

            hidden = packed_hidden(self.model, [{"input_ids": input_ids, "attention_mask": attention}],
                                   self.mask, self.settings.alpha)[0]
        else:
            hidden = self.model.encode(input_ids, attention, mask=self.mask, alpha=self.settings.alpha)
        return self.pooler(hidden.float(), attention, pool_mask).float()

    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """:meth:`encode` with the run's query instruction (``instruction=`` overrides it)."""
        kwargs.setdefault("instruction", self.query_instruction)
        return self.encode(texts, **kwargs)

    def encode_corpus(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """:meth:`encode` of documents (no instruction)."""
        kwargs.setdefault("instruction", None)
        return self.encode(texts, **kwargs)

    def fingerprint(self) -> str:
        """sha256 (hex) of everything that decides the embeddings: the backbone's and the pooler's
        tensors (names, dtypes, shapes, bytes, as they are now in memory), ``embedder.json``'s
        settings and the tokenizer. Two embedders with equal fingerprints encode identically on the
        same device; a retrained, re-cast (bf16 / fp32) or differently configured one differs.
        Cost: one pass over the weights (about a second per GB)."""
        import hashlib

        import torch

        digest = hashlib.sha256()
        for prefix, module in (("model.", self.model), ("pooler.", self.pooler)):
            for name, tensor in sorted(module.state_dict().items()):
                data = tensor.detach().to("cpu").contiguous().reshape(-1)
                digest.update(f"{prefix}{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(data.view(torch.uint8).numpy().tobytes())
        digest.update(json.dumps(self.settings.to_dict(), sort_keys=True).encode())
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # the fast tokenizer's JSON (vocab, merges, normalizer, special tokens) without its
            # truncation / padding state, which every tokenizer call rewrites
            spec = json.loads(backend.to_str())
            spec.pop("truncation", None)
            spec.pop("padding", None)
        else:  # a slow tokenizer is identified by its vocabulary
            spec = self.tokenizer.get_vocab()
        digest.update(json.dumps(spec, sort_keys=True).encode())
        return digest.hexdigest()

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix [len(a), len(b)] (float32) of two embedding arrays."""
        a = np.asarray(a, np.float32)
        b = np.asarray(b, np.float32)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return a @ b.T

    def __repr__(self) -> str:
        return (f"Embedder(source={str(self.source)!r}, dim={self.dim}, pooler={self.settings.pooler['type']!r}, "
                f"mask={self.settings.mask['type']!r}, max_length={self.max_length}, device={self._device!r})")
