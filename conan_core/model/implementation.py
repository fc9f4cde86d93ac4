"""transformers' ``attn_implementation`` names <-> this library's ``attention`` backends.

``from_pretrained(dir, attn_implementation="eager")``, ``config._attn_implementation = "sdpa"``
and ``model.set_attn_implementation("flex_attention")`` select the ``eager`` / ``sdpa`` / ``flex``
backend (``conan_core/ops/attention``); any other key of the ``attention`` registry (a plugin's)
is accepted under its own name. The selected backend is written back to
``config.attention_backend``, so the config always names what runs.
"""

from __future__ import annotations

from typing import Any

from conan_core.errors import ConanError, close_matches

#: backend key -> transformers implementation name
IMPLEMENTATION_OF_BACKEND = {"eager": "eager", "sdpa": "sdpa", "flex": "flex_attention"}
BACKEND_OF_IMPLEMENTATION = {name: key for key, name in IMPLEMENTATION_OF_BACKEND.items()}


class AttentionImplementationError(ConanError, ValueError):
    """An ``attn_implementation`` this model has no backend for."""


def spec_of(value: Any) -> dict[str, Any]:
    """A registry spec from a config value: a bare key or a ``{"type": KEY, ...}`` dict."""
    return {"type": value} if isinstance(value, str) else dict(value)


def implementation_name(backend_spec: Any) -> str:
    """The transformers name of a ``config.attention_backend`` value (``"flex"`` -> ``"flex_attention"``)."""
    key = spec_of(backend_spec)["type"]
    return IMPLEMENTATION_OF_BACKEND.get(key, key)


def backend_for(implementation: str, current: Any) -> Any:
    """The ``config.attention_backend`` value that runs ``implementation``: ``current`` when it
    already names that backend (its options kept), else the bare backend key.

    Raises :class:`AttentionImplementationError` naming the valid choices (flash-attention
    kernels are not among them: use ``"sdpa"``, which dispatches to flash kernels on GPU, or
    ``"flex_attention"``)."""
    from conan_core.registries import REGISTRIES

    key = BACKEND_OF_IMPLEMENTATION.get(implementation, implementation)
    known = list(REGISTRIES["attention"].keys())
    if key not in known:
        valid = sorted(set(IMPLEMENTATION_OF_BACKEND.values()) | {k for k in known if k not in IMPLEMENTATION_OF_BACKEND})
        near = close_matches(implementation, valid)
        hint = f" (did you mean {', '.join(map(repr, near))}?)" if near else ""
        raise AttentionImplementationError(
            f"attn_implementation={implementation!r} is not available for Conan models{hint}. "
            f"Valid: {', '.join(map(repr, valid))}; sdpa reaches flash kernels on GPU by itself.")
    return current if spec_of(current)["type"] == key else key
