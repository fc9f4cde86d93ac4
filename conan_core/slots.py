"""The one walk over config slots: validation, resolution, overrides and dumps all use it.

A *slot* is a field declared with :func:`component_field`: it holds a component spec
``{"type": KEY, **fields}`` (or a list of them) of one registry kind. Slots sit in the sections of
a :class:`~conan_core.config.RunConfig` and inside components' own ``Config`` classes (a wrapper
loss's ``loss``, the soft mask's ``schedule``). :func:`walk_slots` finds them in plain data by
reading the pydantic schema, descending into sections but not into components (a component's
registry walks its own Config); :func:`map_slots` rebuilds the data with every slot replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from pydantic import BaseModel, Field


def component_field(kind: str, default: str | Mapping[str, Any] | None, *, description: str = "") -> Any:
    """A config field holding a nested component spec ``{"type": KEY, **fields}`` of ``kind``.

    ``default`` is a key (``"linear"``), a full spec, or None (slot empty unless set).
    """
    if isinstance(default, str):
        default = {"type": default}
    if default is None:
        return Field(default=None, description=description, json_schema_extra={"registry": kind})
    frozen = dict(default)
    return Field(default_factory=lambda: dict(frozen), description=description,
                 json_schema_extra={"registry": kind})


def nested_kind(field_info: Any) -> str | None:
    """The registry kind of a field declared with :func:`component_field`, else None."""
    extra = getattr(field_info, "json_schema_extra", None)
    if isinstance(extra, dict):
        return extra.get("registry")
    return None


def section_class(field_info: Any) -> type[BaseModel] | None:
    """The pydantic model class of a section field (``data: DataConfig``), else None."""
    ann = getattr(field_info, "annotation", None)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


@dataclass(frozen=True)
class Slot:
    """One occupied slot: its dotted ``path`` (``weak.mask``, ``eval.evaluators[1]``), its registry
    ``kind`` and its ``value`` (a spec dict or a bare key)."""

    path: str
    kind: str
    value: Any


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def walk_slots(model_cls: type[BaseModel], data: Any, prefix: str = "") -> Iterator[Slot]:
    """Every occupied slot of ``data`` (a mapping shaped like ``model_cls``), sections included.

    Missing fields and empty (None) slots are skipped; data that is not a mapping where the schema
    expects one yields nothing (structural validation reports it)."""
    if not isinstance(data, Mapping):
        return
    for name, info in model_cls.model_fields.items():
        if name not in data:
            continue
        value = data[name]
        path = _join(prefix, name)
        kind = nested_kind(info)
        if kind is not None:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    yield Slot(f"{path}[{i}]", kind, item)
            elif value is not None:
                yield Slot(path, kind, value)
            continue
        section = section_class(info)
        if section is not None:
            yield from walk_slots(section, value, path)


def map_slots(model_cls: type[BaseModel], data: Mapping[str, Any], fn: Callable[[str, Any], Any]) -> dict:
    """A copy of ``data`` with every occupied slot's value replaced by ``fn(kind, value)`` (lists
    item by item), sections descended into; other values are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        info = model_cls.model_fields.get(key)
        kind = nested_kind(info) if info is not None else None
        section = section_class(info) if info is not None else None
        if kind is not None and value is not None:
            value = [fn(kind, v) for v in value] if isinstance(value, list) else fn(kind, value)
        elif section is not None and isinstance(value, Mapping):
            value = map_slots(section, value, fn)
        out[key] = value
    return out


def field_at(model_cls: type[BaseModel] | None, name: str) -> Any:
    """The pydantic FieldInfo of ``name`` in ``model_cls`` (None when either is unknown)."""
    if model_cls is None:
        return None
    return model_cls.model_fields.get(name)
