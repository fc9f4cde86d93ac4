"""The model card (README.md) of an export: architecture, training stages, data, metrics, usage.

Every number comes from files: config.json (sizes), the run's config.yaml (stage settings, data),
each stage's DONE (steps, final loss, seconds) and eval/metrics.json (model next to BM25).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAGES = ("pretrain", "sft", "weak", "supervised")
STAGE_TITLES = {"pretrain": "LLM pretraining (causal LM)", "sft": "LLM SFT (causal LM)",
                "weak": "weakly-supervised embedding (InfoNCE, soft mask)",
                "supervised": "supervised embedding (hard negatives, DHNM, MRL)"}


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _load_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return value.get("type", json.dumps(value))
    return str(value)


def _metrics_table(results: dict) -> list[str]:
    from conan_core.eval.base import is_count

    lines = ["| task | metric | model | BM25 |", "|---|---|---|---|"]
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            if key.startswith("bm25/") or is_count(key) or not isinstance(value, (int, float)):
                continue
            ref = metrics.get(f"bm25/{key}")
            lines.append(f"| {task} | {key} | {value:.4f} | {ref:.4f} |" if isinstance(ref, (int, float))
                         else f"| {task} | {key} | {value:.4f} | - |")
    return lines


#: the texts the card's snippets embed; tests run every snippet and compare with Embedder on them
QUERY = "what is a soft mask?"
DOCUMENT = "The soft mask opens attention step by step."
OTHER_INSTRUCTION = "Retrieve the definition of the term"


def _describe_mask(mask: str | dict, alpha: float) -> str:
    if isinstance(mask, str):
        return f"`{mask}`"
    return f"`{json.dumps(mask)}` at alpha {alpha:g}"


def render_model_card(*, name: str, config: dict, settings, mask: str | dict, n_params: int,
                      run_config: dict, done: dict[str, dict], metrics: dict | None,
                      pooler_weights: bool = False) -> str:
    """The README.md text (see the module docstring). ``config`` is the export's config.json;
    ``pooler_weights``: the export holds pooler.safetensors (the snippets load it)."""
    from conan_core.embedder import format_query
    from conan_core.export.st_pooling import sentence_transformers_pooling

    custom_pooling = sentence_transformers_pooling(settings.pooler) is None
    arch = config.get("decoder") or config  # a transformers decoder's sizes sit under "decoder"
    hf = "decoder" in config
    dim = arch.get("hidden_size")
    mrl = settings.mrl_dims[0] if settings.mrl_dims else dim
    block = (f"`{arch.get('model_type')}` (a transformers decoder, run by conan_core's `HFEmbedderModel` "
             "under the mask below)" if hf else
             f"`{config.get('model_type')}` (Conan decoder, Llama-style block: RoPE, RMSNorm, SwiGLU, GQA)")
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [conan_core, sentence-transformers, feature-extraction, text-embeddings]",
        "---",
        "",
        f"# {name}",
        "",
        "A text embedder trained with conan_core following the Conan-embedding-v2 "
        "recipe: a decoder-only LLM trained from scratch, then turned into an embedder with a soft "
        "causal-to-bidirectional mask, hard-negative mining and Matryoshka (MRL) training.",
        "",
        "## Architecture",
        "",
        "| item | value |",
        "|---|---|",
        f"| model type | {block} |",
        f"| layers | {arch.get('num_hidden_layers')} |",
        f"| hidden size | {dim} |",
        f"| attention | {arch.get('num_attention_heads')} query heads, {arch.get('num_key_value_heads')} "
        f"key/value heads, head dim {arch.get('head_dim') or '-'} |",
        f"| FFN | {arch.get('intermediate_size')} |",
        f"| vocabulary | {arch.get('vocab_size')} |",
        f"| max positions | {arch.get('max_position_embeddings')} |",
        f"| parameters | {n_params:,} |",
        *_lora_rows(run_config),
        "",
        "## Embeddings",
        "",
        "| item | value |",
        "|---|---|",
        f"| dimension | {dim} |",
        f"| MRL dims | {', '.join(str(d) for d in settings.mrl_dims) or '-'} |",
        f"| pooling | `{settings.pooler.get('type')}`"
        + (" (instruction tokens excluded)" if settings.pooler.get("exclude_instruction") else "") + " |",
        f"| attention mask | {_describe_mask(mask, settings.alpha)} (config `default_mask`: what a plain forward uses) |",
        f"| normalized | {settings.normalize} |",
        f"| max tokens | {settings.max_length} |",
        f"| query instruction | {json.dumps(settings.query_instruction) if settings.query_instruction else '(none)'} |",
        "",
        "Queries are fed as "
        + (f"`{format_query('{text}', settings.query_instruction)}`" if settings.query_instruction else "`{text}`")
        + "; documents as plain text. Another instruction `I` is written the same way: "
        "`<instruct>I<query>{text}` (the markers are tokens of the tokenizer).",
        "",
        "## Training",
        "",
        "| stage | what | steps | batch | lr | max len | mask | loss | final loss | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        sec = run_config.get(stage) if isinstance(run_config.get(stage), dict) else {}
        info = done.get(stage)
        if not sec and info is None:
            continue
        status = "" if info is not None else " (not run)"
        info = info or {}
        lines.append(f"| {stage}{status} | {STAGE_TITLES[stage]} | {_fmt(info.get('steps', sec.get('steps')))} | "
                     f"{_fmt(sec.get('batch_size'))} | {_fmt(sec.get('lr'))} | {_fmt(sec.get('max_length'))} | "
                     f"{_fmt(sec.get('mask'))} | {_fmt(sec.get('loss'))} | {_fmt(info.get('final_loss'))} | "
                     f"{_fmt(info.get('seconds'))} |")
    data = run_config.get("data") if isinstance(run_config.get("data"), dict) else {}
    lines += ["", "## Data", ""]
    if data.get("dir"):
        lines.append(f"Data root: `{data['dir']}` (pretrain/, sft/, supervised/, sts/, eval/).")
    elif data:
        lines.append(f"The conan_core demo corpus (scale {data.get('demo_scale', 1.0)}), built into the run "
                     "directory's data/.")
    elif run_config:
        lines.append("Not recorded in the run's config.yaml.")
    else:
        lines.append("Not recorded (no run config.yaml next to the model).")
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["Metrics of this model and of BM25 on the same data (conan_core evaluators).", ""]
        lines += _metrics_table(metrics)
    else:
        lines.append("No eval/metrics.json in the run (run `conan eval RUN --data DIR`).")
    lines += ["", "## Usage", "",
              "Every path needs `conan_core` installed: the model code the directory carries "
              "(`configuration_conan.py`, `modeling_conan.py`) imports it. transformers and "
              "sentence-transformers run that code only when asked: pass `trust_remote_code=True`, or "
              "`import conan_core.export.remote_code` first (it registers the classes, and then the plain "
              "calls work). Saving a loaded model again (`save_pretrained`, `SentenceTransformer.save`) "
              "writes the two code files again, so a re-saved copy loads the same way.", ""]
    lines += _usage_conan_core(settings, mrl)
    lines += _usage_sentence_transformers(settings, mrl, custom_pooling)
    lines += _usage_transformers(settings, mrl, pooler_weights)
    return "\n".join(lines)


def _lora_rows(run_config: dict) -> list[str]:
    """The architecture table's LoRA row when the run trained adapters (they are merged here)."""
    model = run_config.get("model") if isinstance(run_config.get("model"), dict) else {}
    lora = model.get("lora")
    if not isinstance(lora, dict):
        return []
    targets = ", ".join(lora.get("target_modules") or [])
    return [f"| training | LoRA r={lora.get('r')}, alpha={lora.get('alpha')} on {targets}, merged into these "
            "weights after every stage |"]


def _usage_conan_core(settings, mrl) -> list[str]:
    return [
        "### conan_core",
        "",
        "```python",
        "from conan_core import Embedder",
        "",
        "emb = Embedder.load(\"PATH\")",
        f"q = emb.encode_queries([{json.dumps(QUERY)}])       # float32 [1, dim], unit rows, the query instruction",
        f"d = emb.encode_corpus([{json.dumps(DOCUMENT)}])",
        "scores = q @ d.T",
        f"other = emb.encode([{json.dumps(QUERY)}], instruction={json.dumps(OTHER_INSTRUCTION)})",
        f"small = emb.encode_corpus([{json.dumps(DOCUMENT)}], dim={mrl})   # MRL prefix, re-normalised",
        "```",
        "",
    ]


def _usage_sentence_transformers(settings, mrl, custom_pooling: bool) -> list[str]:
    from conan_core.embedder import format_query

    lines = [
        "### sentence-transformers",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer(\"PATH\", trust_remote_code=True)",
        f"q = model.encode([{json.dumps(QUERY)}], prompt_name=\"query\")   # model.encode_query(...) in sentence-transformers >= 5",
        f"d = model.encode([{json.dumps(DOCUMENT)}], prompt_name=\"document\")   # or model.encode_document(...)",
        f"other = model.encode([{json.dumps(QUERY)}], prompt=\"<instruct>\" + {json.dumps(OTHER_INSTRUCTION)} + \"<query>\")",
        f"small = model.encode([{json.dumps(DOCUMENT)}], prompt_name=\"document\", truncate_dim={mrl}, normalize_embeddings=True)",
        "```",
        "",
        "The prompts hold the instruction format: `\"query\"` is "
        + (f"`{json.dumps(format_query('', settings.query_instruction))}`"
           if settings.query_instruction else "empty (this model was trained without a query instruction)")
        + ", `\"document\"` is empty. Another instruction needs both markers, as above; a bare `prompt=` "
        "without them is not the input the model was trained on and gives other vectors.",
        "",
        f"`truncate_dim` cuts the normalised vector and does **not** re-normalise it (its norm is then below "
        f"1): pass `normalize_embeddings=True`, as above, for unit vectors (equal to conan_core's "
        f"`dim={mrl}`), or compare with `model.similarity` (cosine), which does not care.",
        "",
    ]
    if custom_pooling:
        lines += [f"The `{settings.pooler.get('type')}` pooling has no sentence-transformers equivalent: the export "
                  "uses `conan_core.export.st_pooling.ConanPooling` (1_ConanPooling/), which sentence-transformers "
                  "imports only with `trust_remote_code=True` (registering the model classes does not cover it).",
                  ""]
    if settings.pooler.get("exclude_instruction"):
        lines += ["The pooler leaves the instruction tokens (up to and including `<query>`) out of the "
                  "pooling; the query prompt's tokens are left out the same way here.", ""]
    return lines


def _pooling_lines(pooler: dict, pooler_weights: bool) -> tuple[list[str], list[str], list[str]]:
    """(imports, lines before ``embed``, lines inside it computing ``emb`` [B, H] from ``hidden``
    and ``pooled``) of the transformers snippet for ``pooler``."""
    kind = pooler.get("type")
    if kind == "mean":
        return [], [], ["    w = pooled.unsqueeze(-1).float()                  # mean over the pooled tokens",
                        "    emb = (hidden * w).sum(1) / w.sum(1).clamp(min=1)"]
    if kind == "weighted_mean":
        return [], [], ["    w = (pooled.cumsum(1) * pooled).unsqueeze(-1).float()   # weight k for the k-th pooled token",
                        "    emb = (hidden * w).sum(1) / w.sum(1).clamp(min=1)"]
    if kind == "last_token":
        return [], [], ["    positions = torch.arange(pooled.shape[1])        # the last pooled token",
                        "    emb = hidden[torch.arange(len(hidden)), torch.where(pooled > 0, positions, -1).amax(1)]"]
    if kind == "first_token":
        return [], [], ["    positions = torch.arange(pooled.shape[1])        # the first pooled token",
                        "    first = torch.where(pooled > 0, positions, pooled.shape[1]).amin(1)",
                        "    emb = hidden[torch.arange(len(hidden)), first.clamp(max=pooled.shape[1] - 1)]"]
    imports = ["import json", "", "import torch"]
    if pooler_weights:
        imports.append("from safetensors.torch import load_file")
    imports += ["from transformers import AutoModel, AutoTokenizer", "", "from conan_core.registries import REGISTRIES"]
    before = [f"# pooling `{kind}` has no three-line form: conan_core's pooler, as embedder.json describes it",
              "spec = json.load(open(\"PATH/embedder.json\"))[\"pooler\"]",
              "pooler = REGISTRIES[\"poolers\"].build(spec, hidden_size=model.config.hidden_size).eval()"]
    if pooler_weights:
        before.append("pooler.load_state_dict(load_file(\"PATH/pooler.safetensors\"))   # its trained weights")
    return imports, before, ["    with torch.inference_mode():",
                             "        emb = pooler(hidden, batch[\"attention_mask\"], pooled)"]


def _usage_transformers(settings, mrl, pooler_weights: bool) -> list[str]:
    imports, before, pool = _pooling_lines(settings.pooler, pooler_weights)
    exclude = bool(settings.pooler.get("exclude_instruction"))
    lines = [
        "### transformers",
        "",
        "```python",
        *(imports or ["import torch", "from transformers import AutoModel, AutoTokenizer"]),
        "",
        "tok = AutoTokenizer.from_pretrained(\"PATH\")",
        "model = AutoModel.from_pretrained(\"PATH\", trust_remote_code=True).eval()   # forward applies config.default_mask",
        *before,
        "",
        "",
        "def embed(texts, instruction=None):",
        "    if instruction:   # the query format",
        "        texts = [\"<instruct>\" + instruction + \"<query>\" + t for t in texts]",
        f"    batch = tok(texts, padding=True, truncation=True, max_length={settings.max_length}, return_tensors=\"pt\")",
        "    with torch.inference_mode():",
        "        hidden = model(**batch).last_hidden_state.float()",
        "    pooled = batch[\"attention_mask\"].clone()       # the tokens that are pooled",
    ]
    if exclude:
        lines += [
            "    if instruction:   # this pooler leaves <s>, <instruct>, the instruction and <query> out",
            "        is_query = batch[\"input_ids\"] == tok.convert_tokens_to_ids(\"<query>\")",
            "        end = torch.where(is_query.any(1), is_query.int().argmax(1), is_query.shape[1])",
            "        pooled = pooled * (torch.arange(pooled.shape[1]) > end[:, None])",
        ]
    lines += pool
    if settings.normalize:
        lines.append("    return torch.nn.functional.normalize(emb, dim=-1)")
    else:
        lines.append("    return emb")
    instr = json.dumps(settings.query_instruction) if settings.query_instruction else "None"
    lines += [
        "",
        "",
        f"q = embed([{json.dumps(QUERY)}], instruction={instr})",
        f"d = embed([{json.dumps(DOCUMENT)}])",
        f"other = embed([{json.dumps(QUERY)}], instruction={json.dumps(OTHER_INSTRUCTION)})",
        f"small = torch.nn.functional.normalize(d[:, :{mrl}], dim=-1)   # MRL prefix",
        "```",
        "",
    ]
    return lines


def write_model_card(out: Path, *, run_root: Path | None, model_dir: Path, settings, model,
                     mask: str | dict) -> Path:
    """Write ``out/README.md`` from the exported config and the run's files; returns its path."""
    run_config = _load_yaml(run_root / "config.yaml") if run_root is not None else {}
    done = {}
    metrics = None
    if run_root is not None:
        for stage in STAGES:
            info = _load_json(run_root / stage / "DONE")
            if isinstance(info, dict):
                done[stage] = info
        metrics = _load_json(run_root / "eval" / "metrics.json")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    n_params = sum(p.numel() for p in model.parameters())
    name = run_config.get("name") or (run_root.name if run_root is not None else model_dir.name)
    text = render_model_card(name=f"{name} (conan_core)", config=config, settings=settings, mask=mask,
                             n_params=n_params, run_config=run_config, done=done,
                             metrics=metrics if isinstance(metrics, dict) else None,
                             pooler_weights=(out / "pooler.safetensors").is_file())
    path = out / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
