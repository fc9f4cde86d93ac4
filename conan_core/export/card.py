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


def render_model_card(*, name: str, config: dict, settings, mask_key: str, n_params: int,
                      run_config: dict, done: dict[str, dict], metrics: dict | None) -> str:
    """The README.md text (see the module docstring)."""
    from conan_core.embedder import format_query
    from conan_core.export.st_pooling import sentence_transformers_pooling

    custom_pooling = sentence_transformers_pooling(settings.pooler) is None

    dim = config.get("hidden_size")
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
        f"| model type | `{config.get('model_type')}` (Llama-style block: RoPE, RMSNorm, SwiGLU, GQA) |",
        f"| layers | {config.get('num_hidden_layers')} |",
        f"| hidden size | {config.get('hidden_size')} |",
        f"| attention | {config.get('num_attention_heads')} query heads, {config.get('num_key_value_heads')} "
        f"key/value heads, head dim {config.get('head_dim')} |",
        f"| FFN | {config.get('intermediate_size')} |",
        f"| vocabulary | {config.get('vocab_size')} |",
        f"| max positions | {config.get('max_position_embeddings')} |",
        f"| parameters | {n_params:,} |",
        "",
        "## Embeddings",
        "",
        "| item | value |",
        "|---|---|",
        f"| dimension | {dim} |",
        f"| MRL dims | {', '.join(str(d) for d in settings.mrl_dims) or '-'} |",
        f"| pooling | `{settings.pooler.get('type')}`"
        + (" (instruction tokens excluded)" if settings.pooler.get("exclude_instruction") else "") + " |",
        f"| attention mask | `{mask_key}` (config `default_mask`) |",
        f"| normalized | {settings.normalize} |",
        f"| max tokens | {settings.max_length} |",
        f"| query instruction | {json.dumps(settings.query_instruction) if settings.query_instruction else '(none)'} |",
        "",
        "Queries are fed as "
        + (f"`{format_query('{text}', settings.query_instruction)}`" if settings.query_instruction else "`{text}`")
        + "; documents as plain text.",
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
    instr = json.dumps(settings.query_instruction)
    pool = settings.pooler.get("type")
    lines += [
        "",
        "## Usage",
        "",
        "Every path needs `conan_core` installed (it holds the model code).",
        "",
        "### conan_core",
        "",
        "```python",
        "from conan_core import Embedder",
        "",
        "emb = Embedder.load(\"PATH\")",
        "q = emb.encode_queries([\"what is a soft mask?\"])       # float32 [1, dim], unit rows",
        "d = emb.encode_corpus([\"The soft mask opens attention step by step.\"])",
        "scores = q @ d.T",
        "small = emb.encode_corpus([\"...\"], dim=%s)           # MRL prefix, re-normalised"
        % (settings.mrl_dims[0] if settings.mrl_dims else dim),
        "```",
        "",
        "### sentence-transformers",
        "",
        "```python",
        "import conan_core.model                     # or pass trust_remote_code=True below",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer(\"PATH\"%s)" % (", trust_remote_code=True" if custom_pooling else ""),
        "q = model.encode([\"what is a soft mask?\"], prompt_name=\"query\")",
        "d = model.encode([\"The soft mask opens attention step by step.\"])",
        "small = model.encode([\"...\"], truncate_dim=%s, normalize_embeddings=True)"
        % (settings.mrl_dims[0] if settings.mrl_dims else dim),
        "```",
        "",
        "### transformers",
        "",
        "```python",
        "import torch",
        "import conan_core.model                     # or pass trust_remote_code=True below",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        "tok = AutoTokenizer.from_pretrained(\"PATH\")",
        "model = AutoModel.from_pretrained(\"PATH\").eval()   # forward uses config.default_mask",
        f"instruction = {instr}",
        "texts = [\"<instruct>\" + instruction + \"<query>\" + \"what is a soft mask?\"]"
        if settings.query_instruction else "texts = [\"what is a soft mask?\"]",
        f"batch = tok(texts, padding=True, truncation=True, max_length={settings.max_length}, return_tensors=\"pt\")",
        "with torch.inference_mode():",
        "    hidden = model(**batch).last_hidden_state",
        "mask = batch[\"attention_mask\"].unsqueeze(-1).float()",
    ]
    if pool == "mean":
        lines.append("emb = (hidden * mask).sum(1) / mask.sum(1)   # mean pooling")
    elif pool == "last_token":
        lines.append("emb = hidden[torch.arange(len(hidden)), batch[\"attention_mask\"].sum(1) - 1]   # last token")
    elif pool == "first_token":
        lines.append("emb = hidden[:, 0]   # first token")
    else:
        lines.append(f"# pooling `{pool}`: use conan_core's pooler (see embedder.json and pooler.safetensors)")
    lines += ["emb = torch.nn.functional.normalize(emb, dim=-1)", "```", ""]
    if custom_pooling:
        lines += [f"The `{pool}` pooling has no sentence-transformers equivalent: the export uses "
                  "`conan_core.export.st_pooling.ConanPooling` (1_ConanPooling/), which sentence-transformers "
                  "imports only with `trust_remote_code=True`.", ""]
    if settings.pooler.get("exclude_instruction"):
        lines += ["The pooler leaves the instruction tokens (up to and including `<query>`) out of the "
                  "pooling; Embedder and sentence-transformers (prompt_name=\"query\") do this for you.", ""]
    return "\n".join(lines)


def write_model_card(out: Path, *, run_root: Path | None, model_dir: Path, settings, model,
                     mask_key: str) -> Path:
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
    text = render_model_card(name=f"{name} (conan_core)", config=config, settings=settings, mask_key=mask_key,
                             n_params=n_params, run_config=run_config, done=done,
                             metrics=metrics if isinstance(metrics, dict) else None)
    path = out / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
