"""Typed registries of components.

A *component* is a plain class with a nested pydantic ``Config(ComponentConfig)`` and an
``__init__(self, config, **runtime)``. A registry maps a *key* to a component class:

* built-in keys are bare (``soft``) and point lazily at ``"module:Class"`` targets, so
  ``import conan_core`` imports none of them;
* plugin keys are ``namespace/name`` and come from the entry-point group
  ``conan_core.<kind>``, read on the first lookup (never at import). A plugin that fails to
  import, collides with another key, or does not implement the kind's base class is marked
  broken: only its own key fails, with the reason; ``CONAN_DISABLE_PLUGINS=1`` turns discovery off.

``registry.build({"type": KEY, **fields}, **runtime)`` validates ``fields`` against the class's
Config and returns the component. Nested components are config fields declared with
:func:`component_field`; they are validated recursively (errors carry the dotted path) and built
by their parent with ``REGISTRIES[kind].build(spec, ...)``.

A kind is one contract: the base class's abstract methods (``forward`` of a loss, ``alpha`` of a
schedule ...) are the calls the trainer makes. Resolving a key checks that its class can take
exactly those calls (:func:`contract_problem`), so a plugin with another signature is refused by
``conan validate`` and the conformance suite, never in the middle of training. The registries of
all kinds form a :class:`RegistrySet` (``conan_core.registries.REGISTRIES``), through which nested
specs of other kinds are resolved.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any, Generic, Iterator, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from conan_core.errors import (  # noqa: F401  (re-exported)
    ConanError,
    ConfigError,
    ConfigIssue,
    PluginError,
    UnknownKeyError,
    close_matches,
)
from conan_core.slots import component_field, map_slots, nested_kind, walk_slots  # noqa: F401  (re-exported)

T = TypeVar("T")

PLUGIN_ENV = "CONAN_DISABLE_PLUGINS"


class ComponentConfig(BaseModel):
    """Base of every component's ``Config``: data only, unknown fields rejected, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- errors
# The error types live in conan_core.errors; they are re-exported here for plugins written
# against the first release (``from conan_core.registry import ConanError``).

def _loc_to_path(prefix: str, loc: tuple) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        parts[-1:] = [f"{parts[-1]}[{item}]"] if isinstance(item, int) and parts else parts[-1:]
        if not isinstance(item, int):
            parts.append(str(item))
    return ".".join(p for p in parts if p)


def pydantic_issues(exc: ValidationError, prefix: str, model: type[BaseModel] | None) -> list[ConfigIssue]:
    """Turn a pydantic ValidationError into ConfigIssues with dotted paths and suggestions."""
    out = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        path = _loc_to_path(prefix, loc)
        issue = ConfigIssue(path=path, message=f"{err['msg']} [{err['type']}]", value=err.get("input"))
        if err["type"] == "extra_forbidden":
            issue.message = "unknown field [extra_forbidden]"
            issue.value = None
            owner = _model_at(model, loc[:-1]) if model is not None else None
            if owner is not None:
                names = list(owner.model_fields)
                issue.suggestions = close_matches(str(loc[-1]), names)
                issue.valid = names
        out.append(issue)
    return out


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (best effort)."""
    current: Any = model
    for item in loc:
        if isinstance(item, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(item))
        if info is None:
            return None
        ann = info.annotation
        args = getattr(ann, "__args__", ()) or ()
        current = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


# ----------------------------------------------------------------------------- registry

@dataclass
class Entry:
    key: str
    target: str | None = None  # "module:Class" (built-in) or entry-point value (plugin)
    origin: str = "core"  # "core" or "plugin <dist> <version>"
    cls: type | None = None
    error: str | None = None  # set when the entry is broken
    entry_point: Any = None


class Registry(Generic[T]):
    """Keys of one kind of component. See the module docstring for the contract."""

    def __init__(self, kind: str, base: str, builtins: Mapping[str, str], description: str = ""):
        self.kind = kind
        self.group = f"conan_core.{kind}"
        self.description = description
        self._base_target = base
        self._base: type | None = None
        self._entries: dict[str, Entry] = {k: Entry(k, v) for k, v in builtins.items()}
        self._scanned = False
        self.family: RegistrySet | None = None  # set by the RegistrySet holding this registry

    # -- discovery
    def _scan_plugins(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        if plugins_disabled():
            return
        if self.family is not None:
            self.family.scan_retired()
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            origin = f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"
            entry = Entry(ep.name, ep.value, origin, entry_point=ep)
            if "/" not in ep.name:
                entry.error = (f"plugin key {ep.name!r} ({origin}) must be 'namespace/name'; "
                               "bare keys are reserved for conan_core")
                warnings.warn(f"conan_core: {self.kind}: {entry.error}", stacklevel=3)
                self._entries.setdefault(ep.name + " (invalid plugin key)", entry)
                continue
            if ep.name in self._entries:
                first = self._entries[ep.name]
                msg = (f"duplicate registry key {ep.name!r} in {self.kind} from {first.origin} "
                       f"and {origin}")
                warnings.warn(f"conan_core: {msg}", stacklevel=3)
                first.error = msg
                first.cls = None
                continue
            self._entries[ep.name] = entry

    @property
    def base(self) -> type:
        if self._base is None:
            self._base = _import_target(self._base_target)
        return self._base

    # -- lookups
    def keys(self) -> list[str]:
        """All keys (built-in and plugin, broken ones included), sorted."""
        self._scan_plugins()
        return sorted(self._entries)

    def entry(self, key: str) -> Entry:
        self._scan_plugins()
        if key not in self._entries:
            raise UnknownKeyError([self.unknown_issue(key, "type")])
        return self._entries[key]

    def unknown_issue(self, key: Any, path: str) -> ConfigIssue:
        keys = self.keys()
        message = f"unknown {self.kind} key"
        other = self.family.kinds_with_key(key, exclude=self.kind) if self.family is not None else []
        if other:  # a key of another kind in this slot: say which contract each side has
            message += (f": {key!r} is a {' / '.join(other)} key, and this slot takes {self.kind} keys"
                        + (f" ({self.description})" if self.description else ""))
        return ConfigIssue(path=path, message=message, value=key,
                           suggestions=[] if other else close_matches(str(key), keys), valid=keys)

    def get(self, key: str) -> type[T]:
        """The component class for ``key`` (imports it on first use)."""
        entry = self.entry(key)
        if entry.cls is not None:
            return entry.cls
        if entry.error is not None:
            raise PluginError(f"{self.kind} key {key!r} is broken: {entry.error}")
        try:
            cls = entry.entry_point.load() if entry.entry_point is not None else _import_target(entry.target)
        except Exception as exc:  # a broken plugin must only break its own key
            entry.error = f"{entry.origin} (entry point {entry.target}) failed to import: {type(exc).__name__}: {exc}"
            if entry.origin != "core":
                warnings.warn(f"conan_core: {self.kind} key {key!r}: {entry.error}", stacklevel=2)
            raise PluginError(f"{self.kind} key {key!r} is broken: {entry.error}") from exc
        problem = self._check_class(cls)
        if problem:
            entry.error = problem
            raise PluginError(f"{self.kind} key {key!r} is broken: {problem}")
        entry.cls = cls
        return cls

    def _check_class(self, cls: Any) -> str | None:
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            return f"{cls!r} does not subclass {self.base.__module__}.{self.base.__qualname__}"
        conf = getattr(cls, "Config", None)
        if not (isinstance(conf, type) and issubclass(conf, ComponentConfig)):
            return f"{cls.__qualname__}.Config must subclass conan_core.registry.ComponentConfig"
        return contract_problem(self.base, cls, self.kind)

    def config_class(self, key: str) -> type[ComponentConfig]:
        return self.get(key).Config

    def origin(self, key: str) -> str:
        return self.entry(key).origin

    # -- validation and building
    def validate(self, spec: Any, path: str = "") -> tuple[ComponentConfig | None, list[ConfigIssue]]:
        """Validate ``{"type": KEY, **fields}``; returns (config or None, every issue found)."""
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, Mapping):
            return None, [ConfigIssue(path, f"expected a {self.kind} spec {{type: KEY, ...}}", spec)]
        if "type" not in spec:
            return None, [ConfigIssue(_join(path, "type"), f"missing the {self.kind} key",
                                      valid=self.keys())]
        key = spec["type"]
        if not isinstance(key, str) or key not in self.keys():
            return None, [self.unknown_issue(key, _join(path, "type"))]
        try:
            conf_cls = self.config_class(key)
        except PluginError as exc:
            return None, [ConfigIssue(_join(path, "type"), str(exc), key)]
        fields = {k: v for k, v in spec.items() if k != "type"}
        issues: list[ConfigIssue] = []
        config = None
        try:
            config = conf_cls(**fields)
        except ValidationError as exc:
            issues.extend(pydantic_issues(exc, path, conf_cls))
        # nested component specs, validated whatever happened above so all errors show at once
        data = config.model_dump() if config is not None else {
            **{n: f.get_default(call_default_factory=True) for n, f in conf_cls.model_fields.items()
               if nested_kind(f) is not None and not f.is_required()}, **fields}
        for slot in walk_slots(conf_cls, data):
            issues.extend(self.sibling(slot.kind).validate(slot.value, _join(path, slot.path))[1])
        return (config if not issues else None), issues

    def build(self, spec: Any, path: str = "", **runtime: Any) -> T:
        """Build a component from ``{"type": KEY, **fields}`` (or a bare key), with runtime deps."""
        config, issues = self.validate(spec, path)
        if issues:
            raise (UnknownKeyError if any(i.message.startswith("unknown " + self.kind) for i in issues)
                   else ConfigError)(issues)
        return self.get(spec if isinstance(spec, str) else spec["type"])(config, **runtime)

    def default_spec(self, key: str) -> dict[str, Any]:
        """The fully resolved spec of ``key`` with every field at its default."""
        conf = self.config_class(key)()
        return {"type": key, **conf.model_dump(mode="json")}

    def resolve(self, spec: Any) -> dict[str, Any]:
        """A spec with every default filled in (nested components too)."""
        if isinstance(spec, str):
            spec = {"type": spec}
        config, issues = self.validate(spec)
        if issues:
            raise ConfigError(issues)
        data = {"type": spec["type"], **_plain(config.model_dump())}
        return map_slots(type(config), data, lambda kind, value: self.sibling(kind).resolve(value))

    def sibling(self, kind: str) -> "Registry":
        """The registry of ``kind`` in the same :class:`RegistrySet` (nested component specs)."""
        if self.family is None:
            raise PluginError(f"{self.kind}: nested {kind} specs need the registry to belong to a RegistrySet")
        return self.family.kind(kind)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, keys={len(self._entries)})"


class RegistrySet(Mapping[str, Registry]):
    """The registries of every kind, by kind name (``REGISTRIES["masks"]``).

    ``retired`` maps kind names that no longer exist to what replaced them: asking for one, or a
    plugin that still registers under its entry-point group, gets that hint.
    """

    def __init__(self, registries: Mapping[str, Registry], *, retired: Mapping[str, str] | None = None):
        self._registries = dict(registries)
        self.retired = dict(retired or {})
        self._retired_scanned = False
        for reg in self._registries.values():
            reg.family = self

    def __getitem__(self, kind: str) -> Registry:
        return self._registries[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registries)

    def __len__(self) -> int:
        return len(self._registries)

    def kind(self, kind: str) -> Registry:
        """The registry of ``kind``; :class:`UnknownKeyError` listing the kinds (and the successor
        of a retired kind) otherwise."""
        if kind in self._registries:
            return self._registries[kind]
        message = "unknown registry kind"
        if kind in self.retired:
            message += f": {kind!r} was split into {self.retired[kind]}"
        raise UnknownKeyError([ConfigIssue("kind", message, kind, close_matches(kind, self._registries),
                                           sorted(self._registries))])

    def kinds_with_key(self, key: Any, *, exclude: str = "") -> list[str]:
        """Kinds (other than ``exclude``) that have ``key``, built-in keys first looked up."""
        if not isinstance(key, str):
            return []
        return [name for name, reg in self._registries.items() if name != exclude and key in reg._entries]

    def scan_retired(self) -> None:
        """Warn once about plugins registering under a retired kind's entry-point group."""
        if self._retired_scanned or plugins_disabled():
            return
        self._retired_scanned = True
        from importlib.metadata import entry_points

        for old, new in self.retired.items():
            for ep in entry_points(group=f"conan_core.{old}"):
                dist = getattr(ep, "dist", None)
                who = f"{dist.name} {dist.version}" if dist is not None else "a plugin"
                warnings.warn(f"conan_core: {who} registers {ep.name!r} under the retired entry-point group "
                              f"conan_core.{old}; it is not loaded. Register it under conan_core.<kind> for "
                              f"the kind it implements: {new}", stacklevel=3)


def plugins_disabled() -> bool:
    """Whether ``CONAN_DISABLE_PLUGINS`` turns plugin discovery off."""
    return os.environ.get(PLUGIN_ENV, "").strip() not in ("", "0", "false", "False")


def contract_problem(base: type, cls: type, kind: str) -> str | None:
    """Why ``cls`` cannot be called as ``base``'s abstract methods are (the kind's contract), or None.

    Each abstract method of ``base`` other than ``__init__`` is bound with the arguments its own
    signature names: positional-or-keyword parameters passed by position, keyword-only ones by
    name, as the trainer calls them. ``cls``'s method must accept that call and require nothing more.
    """
    for name in sorted(getattr(base, "__abstractmethods__", ())):
        if name == "__init__":
            continue
        impl = getattr(cls, name, None)
        if impl is None or getattr(impl, "__isabstractmethod__", False):
            return f"{cls.__qualname__} does not implement {name}() of the {kind} contract"
        want = inspect.signature(getattr(base, name))
        args, kwargs = [], {}
        for p in list(want.parameters.values())[1:]:  # without self
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                args.append(p.name)
            elif p.kind == p.KEYWORD_ONLY:
                kwargs[p.name] = p.name
        try:
            inspect.signature(impl).bind("self", *args, **kwargs)
        except TypeError as exc:
            shown = ", ".join([*args, *(f"{k}=" for k in kwargs)])
            return (f"{cls.__qualname__}.{name}{inspect.signature(impl)} cannot take the {kind} contract's call "
                    f"{name}({shown}) ({exc}); match {base.__qualname__}.{name}{want}")
    return None


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (a resolved spec is YAML/JSON data)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _import_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
