"""``export_run``: write a directory that loads with transformers and sentence-transformers.

Layout of ``OUT/``::

    config.json, model.safetensors     the encoder (no LM head) with the mask the embedder used:
                                       model_type "conan_embedder" (Conan decoder) or
                                       "conan_hf_embedder" (any transformers decoder, e.g. Qwen2)
    configuration_conan.py             the classes' code (conan_core/backbones/remote_code), which
    modeling_conan.py                  imports the installed conan_core; transformers copies both
                                       files again on every save of a model loaded from OUT
    tokenizer.json, tokenizer_config.json, ...
    embedder.json (+ pooler.safetensors)   what Embedder.load(OUT) reads
    modules.json, sentence_bert_config.json, config_sentence_transformers.json (prompts "query",
                                       "document": the instruction format of Embedder)
    1_Pooling/config.json              sentence-transformers Pooling (or 1_ConanPooling/ for poolers
                                       it cannot express: see conan_core.export.st_pooling)
    2_Normalize/                       when the embeddings are normalised
    README.md                          model card (its code snippets are run by the tests)

Loading (conan_core must be installed: it holds the model code)::

    AutoModel.from_pretrained(OUT, trust_remote_code=True)
    SentenceTransformer(OUT, trust_remote_code=True)
    # or, without remote code: import conan_core.export.remote_code (registers both model types)

``config.default_mask`` / ``default_alpha`` make a plain ``forward`` use the mask the embedder
used (bidirectional after the supervised stage), so AutoModel + pooling, sentence-transformers
and ``Embedder`` give the same embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from conan_core.errors import ConanError
from conan_core.export.st_pooling import sentence_transformers_pooling

class ExportError(ConanError, ValueError):
    """The run cannot be exported as asked (the message says why and what to do)."""


def export_mask(mask: dict, alpha: float) -> tuple[str | dict, float]:
    """``(default_mask, default_alpha)`` of the export's config: what a plain forward applies.

    A mask equal to ``causal`` or ``bidirectional`` at the recorded ``alpha`` (checked on a few
    lengths; the default soft mask is bidirectional at alpha 1 and causal at alpha 0, RECIPE §3)
    is written as that key, which needs no alpha, no plugin and takes the fast attention paths;
    any other mask (the soft mask mid-schedule, its ``i_over_l`` variant, a plugin's) is written as
    its full spec with ``alpha``, so every mask a stage can end with exports.
    """
    import torch

    from conan_core.masks.base import MaskContext
    from conan_core.registries import REGISTRIES

    kind = mask.get("type")
    if kind in ("bidirectional", "causal"):
        return kind, float(alpha)
    ctx = MaskContext(lengths=torch.tensor([1, 2, 5, 8, 8]), seq_len=8, alpha=float(alpha))
    matrix = REGISTRIES["masks"].build(mask, "embedder.json mask").matrix(ctx)
    for key in ("bidirectional", "causal"):
        if torch.equal(matrix, REGISTRIES["masks"].build({"type": key}).matrix(ctx)):
            return key, float(alpha)
    return dict(mask), float(alpha)


#: written into every export; an existing ``--out`` holding it may be replaced without ``--overwrite``
EXPORT_MARKER = ".conan-export"


def check_output_dir(out: Path, model_dir: Path, run_root: Path | None, *, overwrite: bool) -> str:
    """How ``out`` may be written: ``"new"`` (absent or empty), ``"replace"`` (a previous export,
    recognised by :data:`EXPORT_MARKER`) or ``"merge"`` (a non-empty foreign directory, only with
    ``overwrite``: files of the export's names are replaced, every other file is kept).

    Raises :class:`ExportError` when ``out`` is, contains or lies inside the model being exported
    or contains its run directory (writing there would destroy what is being exported), and for a
    non-empty foreign directory without ``overwrite``.
    """
    target = out.resolve()
    model = model_dir.resolve()
    for path in ([run_root.resolve()] if run_root is not None else []) + [model]:
        relation = "is" if target == path else "contains" if target in path.parents else None
        if relation is None and path == model and model in target.parents:
            relation = "is inside"
        if relation is not None:
            raise ExportError(
                f"export: --out {out} {relation} {path}, which is being exported; writing there would destroy "
                "it, so nothing was written. Pick a directory outside it (the default is RUN/export).")
    if out.exists() and not out.is_dir():
        raise ExportError(f"export: --out {out} is a file, not a directory; pick a directory")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    if (out / EXPORT_MARKER).is_file():
        return "replace"
    if overwrite:
        return "merge"
    raise ExportError(f"export: --out {out} is a non-empty directory that is not a previous export (no "
                      f"{EXPORT_MARKER} file); nothing was written. Pick an empty or new directory, or pass "
                      "--overwrite to write the export's files into it (files of other names are kept).")


def _install(tmp: Path, out: Path, how: str) -> None:
    """Move the finished export ``tmp`` to ``out`` as :func:`check_output_dir` decided."""
    from conan_core.fsio import apply_umask, publish_dir

    if how == "new" and out.is_dir():
        out.rmdir()  # empty: nothing of anyone's is lost
    if how in ("new", "replace"):
        publish_dir(tmp, out)
        return
    # a merged directory is not marked as an export: a later export must not replace it (and the
    # files of others in it) without --overwrite again
    (tmp / EXPORT_MARKER).unlink(missing_ok=True)
    apply_umask(tmp)
    for item in sorted(tmp.iterdir()):
        dest = out / item.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(item, dest)


def export_run(run_dir: str | Path, out_dir: str | Path, *, max_length: int | None = None,
               verify: bool = False, overwrite: bool = False) -> Path:
    """Export the run's embedder (latest finished stage; also accepts a stage final/ or another
    export) to ``out_dir``. ``out_dir`` must be new, empty or a previous export (replaced), unless
    ``overwrite`` (see :func:`check_output_dir`); it may never be or contain what is exported.
    ``max_length`` overrides the sequence length recorded for sentence-transformers (default:
    embedder.json's). ``verify`` re-loads the export with :class:`~conan_core.embedder.Embedder` and
    checks it reproduces the source's embeddings. Non-finite weights are refused. Returns ``out_dir``.
    """
    import tempfile

    from conan_core.embedder import resolve_model_dir
    from conan_core.fsio import writing

    run_dir = Path(run_dir)
    out = Path(out_dir)
    model_dir, run_root = resolve_model_dir(run_dir)
    how = check_output_dir(out, model_dir, run_root, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh private name: a fixed "OUT.tmp" could be somebody's directory
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export-tmp", dir=out.parent))
    try:
        with writing(tmp):
            embedder = _write_export(tmp, model_dir, run_root, max_length)
        _install(tmp, out, how)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verify:
        verify_export(embedder, out)
    return out


def _write_export(tmp: Path, model_dir: Path, run_root: Path | None, max_length: int | None):
    """Write every file of the export into the empty directory ``tmp``; returns the Embedder."""
    import time

    import torch

    from conan_core.embedder import Embedder, EmbedderSettings, quiet_transformers
    from conan_core.export.card import write_model_card

    embedder = Embedder.load(model_dir, device="cpu", dtype=torch.float32)  # refuses non-finite weights
    settings = EmbedderSettings.from_dict(embedder.settings.to_dict())
    if max_length is not None:
        settings.max_length = int(max_length)
    default_mask, default_alpha = export_mask(settings.mask, settings.alpha)

    # -- transformers: the encoder only, with the mask it needs; saving a model of the export
    # classes copies their code files and writes auto_map (the mechanism every re-save repeats)
    model = export_model(embedder.model, default_mask, default_alpha, settings.to_dict())
    with quiet_transformers():
        model.save_pretrained(str(tmp))
    missing = [name for name in CODE_FILES if not (tmp / name).is_file()]
    if missing:
        raise ExportError(f"export: transformers did not write the code files {missing} into {tmp}; this "
                          "transformers version no longer copies the code of classes registered for an Auto "
                          "class on save (custom_object_save). Pin transformers to a version that does "
                          "(5.25 is tested)")
    embedder.tokenizer.save_pretrained(str(tmp))
    _set_tokenizer_max_length(tmp, settings.max_length)

    # -- conan_core: embedder.json (+ pooler weights)
    (tmp / "embedder.json").write_text(json.dumps(settings.to_dict(), indent=2) + "\n", encoding="utf-8")
    pooler_state = {k: v.detach().float().cpu().contiguous() for k, v in embedder.pooler.state_dict().items()}
    if pooler_state:
        from safetensors.torch import save_file

        save_file(pooler_state, str(tmp / "pooler.safetensors"))

    # -- sentence-transformers
    _write_sentence_transformers(tmp, settings, embedder, pooler_state)

    # -- model card
    write_model_card(tmp, run_root=run_root, model_dir=model_dir, settings=settings,
                     model=model, mask=default_mask)
    (tmp / EXPORT_MARKER).write_text(json.dumps({"source": str(model_dir.resolve()),
                                                 "created": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n",
                                     encoding="utf-8")
    return embedder


#: the code files an export carries (conan_core/backbones/remote_code)
CODE_FILES = ("configuration_conan.py", "modeling_conan.py")
#: config fields describing a saved file or set by the export, not the architecture
_NOT_ARCHITECTURE = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path", "dtype",
                     "torch_dtype", "default_mask", "default_alpha")


def export_model(model, default_mask: str | dict, default_alpha: float, embedder: dict | None = None):
    """The encoder of an ``Embedder`` model as an export class (see ``conan_core.backbones.remote_code``).

    ``model`` is a ``ConanModel`` (the ``conan`` backbone, or a previous export) or an ``HFDecoder``
    / ``HFEmbedderModel`` (the ``hf`` backbone). The Conan encoder's weights are shared, not copied
    (built on the meta device and assigned); a transformers decoder is wrapped as it is. The LM head
    is never part of an export. ``embedder``: the embedder.json contents the config keeps."""
    import torch

    from conan_core.backbones.hf import HFDecoder
    from conan_core.backbones.remote_code import ConanEmbedderConfig, ConanEmbedderModel, HFEmbedderConfig, HFEmbedderModel
    from conan_core.model import ConanModel

    if isinstance(model, ConanModel):
        fields = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_ARCHITECTURE}
        fields.pop("embedder", None)
        config = ConanEmbedderConfig(default_mask=default_mask, default_alpha=default_alpha, embedder=embedder,
                                     **fields)
        with torch.device("meta"):
            out = ConanEmbedderModel(config)
        out.load_state_dict(model.state_dict(), strict=True, assign=True)
        return out
    if isinstance(model, HFDecoder):
        decoder = model.hf.base_model
    elif isinstance(model, HFEmbedderModel):
        decoder = model.decoder
    else:
        raise ExportError(f"export: cannot export a {type(model).__name__}; the conan and hf backbones export "
                          "(ConanModel, HFDecoder)")
    implementation = getattr(decoder.config, "_attn_implementation", None)
    config = HFEmbedderConfig(decoder=decoder.config.to_dict(), default_mask=default_mask,
                              default_alpha=default_alpha, embedder=embedder,
                              decoder_attn_implementation=implementation if implementation == "eager" else "sdpa")
    return HFEmbedderModel.from_decoder(config, decoder)


def _set_tokenizer_max_length(out: Path, max_length: int) -> None:
    """Record the embedder's max_length as the tokenizer's model_max_length (truncation default)."""
    file = out / "tokenizer_config.json"
    if file.is_file():
        cfg = json.loads(file.read_text(encoding="utf-8"))
        cfg["model_max_length"] = int(max_length)
        file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers(out: Path, settings, embedder, pooler_state: dict) -> None:
    from conan_core.embedder import format_query

    hidden = int(embedder.model.config.hidden_size)
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    mode = sentence_transformers_pooling(settings.pooler)
    if mode is not None:
        pooling_dir = out / "1_Pooling"
        pooling_dir.mkdir()
        # both spellings: pooling_mode for sentence-transformers >= 5, the booleans for older ones
        legacy = {f"pooling_mode_{k}": False for k in ("cls_token", "mean_tokens", "max_tokens",
                                                          "mean_sqrt_len_tokens", "weightedmean_tokens",
                                                          "lasttoken")}
        legacy[{"mean": "pooling_mode_mean_tokens", "lasttoken": "pooling_mode_lasttoken",
                "cls": "pooling_mode_cls_token", "weightedmean": "pooling_mode_weightedmean_tokens"}[mode]] = True
        config = {"word_embedding_dimension": hidden, **legacy,
                  "include_prompt": not settings.pooler.get("exclude_instruction", False)}
        (pooling_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    else:
        from conan_core.export.st_pooling import ConanPooling

        module = ConanPooling(settings.pooler, hidden)
        if pooler_state:
            module.pooler.load_state_dict(pooler_state)
        module.save(str(out / "1_ConanPooling"))
        modules.append({"idx": 1, "name": "1", "path": "1_ConanPooling",
                        "type": "conan_core.export.st_pooling.ConanPooling"})
    if settings.normalize or settings.pooler.get("normalize"):
        (out / "2_Normalize").mkdir()
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": settings.max_length, "do_lower_case": False}, indent=2) + "\n", encoding="utf-8")
    prompts = {"query": format_query("", settings.query_instruction) if settings.query_instruction else "",
               "document": ""}
    st_config = {"__version__": _versions(), "prompts": prompts, "default_prompt_name": None,
                 "similarity_fn_name": "cosine", "model_type": "SentenceTransformer"}
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name, dist in (("sentence_transformers", "sentence-transformers"), ("transformers", "transformers"),
                       ("pytorch", "torch")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def verify_export(embedder, out: str | Path, texts: list[str] | None = None, atol: float = 1e-4) -> float:
    """Max abs difference between ``embedder`` and ``Embedder.load(out)`` on probe texts (queries and
    documents); raises :class:`ExportError` above ``atol``."""
    import numpy as np

    from conan_core.embedder import Embedder

    texts = texts or ["", "a short text", "a somewhat longer text about retrieval with embeddings " * 3]
    again = Embedder.load(out, device=embedder.device, dtype=embedder.dtype)
    diff = 0.0
    for fn in ("encode_queries", "encode_corpus"):
        a = getattr(embedder, fn)(texts)
        b = getattr(again, fn)(texts)
        diff = max(diff, float(np.abs(a - b).max()))
    if diff > atol:
        raise ExportError(f"export check failed: {out} gives embeddings that differ by {diff:.2e} (> {atol})")
    return diff
