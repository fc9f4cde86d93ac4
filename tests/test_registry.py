"""Registry contract: lazy targets, unknown keys, validation with paths, nested specs, base checks."""

import textwrap

import pytest

from conan_core.errors import ConfigError, PluginError, UnknownKeyError
from conan_core.registry import Registry


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A module of toy components on sys.path, and a registry over it."""
    (tmp_path / "toy_components.py").write_text(textwrap.dedent('''
        from pydantic import Field
        from conan_core.registry import ComponentConfig, component_field

        IMPORTED = True

        class Base:
            """The toy kind's base class."""

        class Scale(Base):
            class Config(ComponentConfig):
                factor: float = Field(2.0, gt=0)
                name: str = "scale"
            def __init__(self, config, *, offset=0.0):
                self.config, self.offset = config, offset

        class Wrapper(Base):
            class Config(ComponentConfig):
                inner: dict = component_field("toy", "scale")
                repeat: int = 1
            def __init__(self, config):
                from conan_core.registries import REGISTRIES
                self.config = config
                self.inner = REGISTRIES["toy"].build(config.inner)

        class NotAComponent:
            class Config(ComponentConfig):
                x: int = 1

        class NoConfig(Base):
            """Subclasses the base but has no Config: the registry must refuse it."""
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    from conan_core import registries

    reg = Registry("toy", "toy_components:Base", {
        "scale": "toy_components:Scale", "wrapper": "toy_components:Wrapper",
        "wrong_base": "toy_components:NotAComponent", "no_config": "toy_components:NoConfig",
        "missing": "toy_components_absent:Thing"})
    # a kind of the test's own, added to the library's set for the duration of the test
    monkeypatch.setitem(registries.REGISTRIES._registries, "toy", reg)
    reg.family = registries.REGISTRIES
    return reg


def test_build_with_runtime_and_defaults(toy):
    comp = toy.build({"type": "scale", "factor": 3.0}, offset=1.5)
    assert comp.config.factor == 3.0 and comp.offset == 1.5 and comp.config.name == "scale"
    assert toy.build("scale").config.factor == 2.0


def test_config_is_frozen_and_forbids_extra(toy):
    comp = toy.build("scale")
    with pytest.raises(Exception):
        comp.config.factor = 5.0
    with pytest.raises(ConfigError) as err:
        toy.build({"type": "scale", "factr": 3.0})
    text = str(err.value)
    assert "factr" in text and "unknown field" in text and "'factor'" in text


def test_unknown_key_suggests_and_lists(toy):
    with pytest.raises(UnknownKeyError) as err:
        toy.build({"type": "scael"})
    text = str(err.value)
    assert "unknown toy key" in text and "did you mean 'scale'" in text and "valid:" in text


def test_bad_value_has_path(toy):
    _, issues = toy.validate({"type": "scale", "factor": -1}, "stage.comp")
    assert [i.path for i in issues] == ["stage.comp.factor"]
    assert "greater_than" in issues[0].message


def test_nested_errors_collected_with_paths(toy):
    _, issues = toy.validate({"type": "wrapper", "repeat": "x", "inner": {"type": "scale", "factor": 0}}, "w")
    paths = sorted(i.path for i in issues)
    assert paths == ["w.inner.factor", "w.repeat"]
    _, issues = toy.validate({"type": "wrapper", "inner": {"type": "nope"}}, "w")
    assert issues[0].path == "w.inner.type"


def test_nested_build_and_resolve(toy):
    comp = toy.build({"type": "wrapper", "inner": {"type": "scale", "factor": 4.0}})
    assert comp.inner.config.factor == 4.0
    assert toy.resolve("wrapper") == {"type": "wrapper", "inner": {"type": "scale", "factor": 2.0, "name": "scale"},
                                      "repeat": 1}


def test_base_class_and_config_checked(toy):
    with pytest.raises(PluginError, match="does not subclass"):
        toy.get("wrong_base")
    with pytest.raises(PluginError, match="Config must subclass"):
        toy.get("no_config")
    with pytest.raises(PluginError, match="failed to import"):
        toy.get("missing")
    assert toy.get("scale").__name__ == "Scale"  # a broken key never breaks the others


def test_missing_type(toy):
    _, issues = toy.validate({"factor": 1.0}, "x")
    assert issues[0].path == "x.type" and "missing" in issues[0].message


def test_import_is_lazy(toy):
    import sys

    sys.modules.pop("toy_components", None)
    toy.keys()
    assert "toy_components" not in sys.modules
    toy.get("scale")
    assert "toy_components" in sys.modules


def test_every_builtin_key_resolves():
    from conan_core.registries import REGISTRIES

    for kind, reg in REGISTRIES.items():
        for key in reg.keys():
            if reg.origin(key) == "core":
                cls = reg.get(key)
                assert issubclass(cls, reg.base), (kind, key)
