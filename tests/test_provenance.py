"""provenance.json and the report's opening: a run with a plugin schedule says so, with the preset,
the overrides, the versions, the plugin distribution and the git commit."""

from __future__ import annotations

import json

from conan_core import provenance
from conan_core.config import base_preset, config_origin, load_config
from conan_core.registries import REGISTRIES
from conan_core.report import provenance_lines


def test_origin_follows_the_extends_chain_to_its_preset(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("extends: tiny\nweak: {steps: 7}\n")
    second = tmp_path / "b.yaml"
    second.write_text(f"extends: {first}\nsupervised: {{steps: 9}}\n")
    cfg = load_config(second, ["seed=3"])
    assert config_origin(cfg) == {"config": str(second), "preset": "tiny", "overrides": ["seed=3"]}
    alone = tmp_path / "c.yaml"
    alone.write_text("name: mine\n")
    assert base_preset(alone) is None and base_preset("small") == "small"
    rows = {path: (old, new) for path, old, new in provenance.config_diff(cfg, "tiny")}
    tiny = load_config("tiny")
    assert rows["weak.steps"] == (tiny.weak.steps, 7) and rows["supervised.steps"] == (tiny.supervised.steps, 9)
    assert rows["seed"] == (0, 3)
    assert "pretrain.steps" not in rows


def test_a_plugin_schedule_run_reports_preset_overrides_versions_and_plugin(tmp_path):
    key = "example/exponential"
    assert key in REGISTRIES["mask_schedules"].keys()  # plugins/conan-example is installed by make setup
    cfg = load_config("tiny", [f"weak.mask.schedule.type={key}", "weak.steps=20"])
    path = provenance.write_once(cfg, tmp_path)
    origin = json.loads(path.read_text())
    assert origin["preset"] == "tiny" and origin["overrides"] == [f"weak.mask.schedule.type={key}", "weak.steps=20"]
    assert origin["plugin_keys"] == [key] and any(p.startswith("conan-example ") for p in origin["plugins"])
    assert {"conan-core", "torch", "transformers", "python"} <= set(origin["versions"])
    provenance.write_once(load_config("tiny"), tmp_path)  # an existing record is kept
    assert json.loads(path.read_text()) == origin

    text = "\n".join(provenance_lines(cfg, origin))
    assert f"command-line overrides: `weak.mask.schedule.type={key}`, `weak.steps=20`" in text
    assert f"plugin keys this config uses: `{key}`" in text and "conan-example" in text
    assert "| `weak.mask.schedule.type` | \"linear\" | \"example/exponential\" |" in text
    assert f"| `weak.steps` | {load_config('tiny').weak.steps} | 20 |" in text
    git = provenance.git_commit()
    if git is not None:  # a git checkout of conan_core
        assert git["commit"] in text and len(git["commit"]) == 40
    else:
        assert "not a git checkout" in text
