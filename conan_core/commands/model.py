"""``conan model info PRESET_OR_YAML_OR_ARCH``: architecture, parameter count, memory plan.

``add_commands(subparsers)`` adds the ``model`` command to the ``conan`` CLI's subparsers; each leaf
parser sets ``func(args) -> int`` (the exit code). Models are built on the meta device, so the
paper-scale ``conan-1.4b`` is counted without allocating its weights.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

#: ConanConfig / transformers config fields printed as "the architecture"
ARCH_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
               "rope_theta", "rms_norm_eps", "tie_word_embeddings", "attention_backend", "norm")


def add_commands(subparsers: Any) -> None:
    """Add ``model info`` to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("model", help="inspect a backbone: architecture, parameters, memory",
                                   description="Inspect the backbone of a preset, a run YAML or a named "
                                               "architecture (conan_core.model.sizes.ARCHITECTURES).")
    sub = parser.add_subparsers(dest="model_command", metavar="{info}")
    sub.required = True
    info = sub.add_parser("info", help="print the architecture and parameter count",
                          description="Print the architecture and `parameters: N` (no LM head, the "
                                      "paper's convention), built on the meta device.")
    info.add_argument("target", help="preset name, run YAML path, or architecture name "
                                     "(tiny, small, conan-1.4b)")
    info.add_argument("--architecture", action="store_true",
                      help="read TARGET as an architecture name even when a preset has the same name")
    info.add_argument("--vocab-size", type=int, default=None,
                      help="vocabulary size (default: the run's tokenizer.vocab_size, or the architecture's)")
    info.add_argument("--gpus", type=int, default=8, help="GPUs for the memory plan (default 8)")
    info.add_argument("--zero-stage", type=int, default=1, choices=(0, 1, 2, 3),
                      help="ZeRO stage for the memory plan (default 1, as the paper)")
    info.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"),
                      help="weight precision for the memory plan (default bf16)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run_info)


def resolve_target(target: str, vocab_size: int | None = None,
                   architecture: bool = False) -> tuple[Any, int, str]:
    """``(backbone component, vocab_size, source label)`` for a preset / YAML / architecture name.

    A preset or YAML run config is read with ``conan_core.config.load_config`` (its ``model``
    backbone and ``tokenizer.vocab_size``); otherwise ``target`` must be an ``ARCHITECTURES`` name,
    which becomes a ``conan`` backbone of those sizes (``architecture=True`` skips the run config).
    """
    from conan_core.errors import ConanError, ConfigError, close_matches
    from conan_core.model.sizes import ARCHITECTURES
    from conan_core.registries import REGISTRIES

    try:
        from conan_core.config import load_config
    except ImportError:  # an installation without the run-config module
        load_config = None
    run_error: ConfigError | None = None
    if load_config is not None and not architecture:
        try:
            cfg = load_config(target)
        except ConfigError as exc:
            run_error = exc
        else:
            backbone = REGISTRIES["backbones"].build(cfg.model, path="model")
            vocab = vocab_size if vocab_size is not None else cfg.tokenizer.vocab_size
            return backbone, int(vocab), f"run config {target} (model: {cfg.model.get('type')})"
    if target in ARCHITECTURES:
        arch = dict(ARCHITECTURES[target])
        vocab = vocab_size if vocab_size is not None else arch.pop("vocab_size")
        arch.pop("vocab_size", None)
        backbone = REGISTRIES["backbones"].build({"type": "conan", **arch}, path="model")
        return backbone, int(vocab), f"architecture {target}"
    # looked like a file or a preset that failed validation: show those errors
    if run_error is not None and not any(i.message == "neither a YAML file nor a preset" for i in run_error.issues):
        raise run_error
    near = close_matches(target, list(ARCHITECTURES))
    raise ConanError(f"{target!r} is neither a preset, a YAML file nor an architecture"
                     + (f"; did you mean {', '.join(map(repr, near))}?" if near else "")
                     + f"; architectures: {', '.join(ARCHITECTURES)}")


def describe(backbone: Any, vocab_size: int) -> dict[str, Any]:
    """Architecture fields, counted parameters (meta build) and closed-form breakdown."""
    from conan_core.model.sizes import count_parameters, parameter_breakdown

    model = backbone.build(vocab_size, meta=True)
    config = model.config
    arch = {name: getattr(config, name) for name in ARCH_FIELDS if hasattr(config, name)}
    if "rope_theta" not in arch and isinstance(getattr(config, "rope_parameters", None), dict):
        arch["rope_theta"] = config.rope_parameters.get("rope_theta")
    info: dict[str, Any] = {
        "model_type": config.model_type,
        "architecture": arch,
        "parameters": count_parameters(model, exclude_lm_head=True),
        "parameters_with_lm_head": count_parameters(model, exclude_lm_head=False),
    }
    if config.model_type == "conan":
        info["breakdown"] = parameter_breakdown({**arch, "vocab_size": vocab_size})
    return info


def run_info(args: argparse.Namespace) -> int:
    """Print the architecture, ``parameters: N`` and a per-GPU memory plan."""
    from conan_core.model.sizes import format_bytes, memory_plan

    backbone, vocab, source = resolve_target(args.target, args.vocab_size, args.architecture)
    info = describe(backbone, vocab)
    info["source"] = source
    if info["model_type"] == "conan":
        info["memory_plan"] = memory_plan({**info["architecture"], "vocab_size": vocab}, args.gpus,
                                          args.zero_stage, args.dtype)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"source: {source}")
    print(f"model_type: {info['model_type']}")
    print("architecture:")
    for name, value in info["architecture"].items():
        print(f"  {name}: {value}")
    n = info["parameters"]
    print(f"parameters: {n} ({_millions(n)}, no LM head)")
    print(f"parameters_with_lm_head: {info['parameters_with_lm_head']}")
    if "breakdown" in info:
        b = info["breakdown"]
        layers = info["architecture"]["num_hidden_layers"]
        print(f"  token embedding: {_millions(b['embedding'])}")
        print(f"  blocks: {layers} x {_millions(b['block'])} = {_millions(b['blocks'])} "
              f"(attention {_millions(b['attention'])}, mlp {_millions(b['mlp'])} per block)")
        print(f"  lm head: {_millions(b['lm_head'])}" + (" (tied)" if b["lm_head"] == 0 else ""))
    if "memory_plan" in info:
        p = info["memory_plan"]
        print(f"memory per GPU ({p['n_gpus']} GPUs, ZeRO-{p['zero_stage']}, {p['dtype']}; activations "
              f"not included): weights {format_bytes(p['weights'])}, grads {format_bytes(p['grads'])}, "
              f"optimizer {format_bytes(p['optimizer'])}, total {format_bytes(p['total'])}")
    return 0


def _millions(n: int) -> str:
    """``1499205120 -> '1499.2M'``, ``218944 -> '0.219M'``."""
    return f"{n / 1e6:.1f}M" if n >= 1e8 else f"{n / 1e6:.3g}M"
