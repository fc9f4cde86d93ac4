"""Plugin discovery through real installed distributions (dist-info on a path Python scans).

Each case runs ``conan`` in a fresh interpreter so discovery happens from scratch.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def make_dist(root, dist, module, code, entry_points):
    """Install a minimal distribution into ``root``: a module and its .dist-info with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


GOOD = '''
from conan_core.registry import ComponentConfig
from conan_core.schedules.base import MaskSchedule

class Half(MaskSchedule):
    class Config(ComponentConfig):
        value: float = 0.5
    def alpha(self, step, total_steps):
        return self.config.value
'''


def conan(args, path, **env):
    full = dict(os.environ, PYTHONPATH=str(path), **env)
    full.pop("CONAN_DISABLE_PLUGINS", None) if "CONAN_DISABLE_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-m", "conan_core.cli", *args], capture_output=True, text=True,
                          env=full, timeout=120)


@pytest.fixture
def site(tmp_path):
    make_dist(tmp_path, "good-plugin", "good_plugin", GOOD,
              {"conan_core.mask_schedules": {"acme/half": "good_plugin:Half"}})
    make_dist(tmp_path, "broken-plugin", "broken_plugin", "raise RuntimeError('boom at import')\n",
              {"conan_core.mask_schedules": {"acme/broken": "broken_plugin:Thing"}})
    make_dist(tmp_path, "clash-plugin", "clash_plugin", GOOD,
              {"conan_core.contrastive_losses": {"acme/x": "clash_plugin:Half"},
               "conan_core.miners": {"acme/dup": "clash_plugin:Half"}})
    make_dist(tmp_path, "clash-plugin-two", "clash_plugin_two", GOOD,
              {"conan_core.miners": {"acme/dup": "clash_plugin_two:Half"}})
    return tmp_path


def test_discovered_with_origin_and_usable(site):
    res = conan(["list", "mask_schedules", "--json"], site)
    assert res.returncode == 0, res.stderr
    rows = {r["key"]: r for r in json.loads(res.stdout)["mask_schedules"]}
    assert rows["acme/half"]["origin"] == "plugin good-plugin 0.3"
    assert rows["acme/half"]["error"] is None
    assert rows["linear"]["origin"] == "core"
    cfg = site / "run.yaml"
    cfg.write_text("weak:\n  mask: {type: soft, schedule: {type: acme/half, value: 0.25}}\n")
    assert conan(["validate", str(cfg)], site).returncode == 0


def test_broken_plugin_is_isolated(site):
    res = conan(["list", "mask_schedules"], site)
    assert res.returncode == 0, res.stderr
    line = next(l for l in res.stdout.splitlines() if "acme/broken" in l)
    assert "BROKEN" in line and "RuntimeError: boom at import" in line and "broken-plugin" in line
    assert "acme/half" in res.stdout and "linear" in res.stdout


def test_broken_plugin_error_has_cause(site, monkeypatch):
    code = textwrap.dedent('''
        from conan_core.registries import REGISTRIES
        from conan_core.errors import PluginError
        try:
            REGISTRIES["mask_schedules"].get("acme/broken")
        except PluginError as exc:
            assert isinstance(exc.__cause__, RuntimeError), exc.__cause__
            print("ok:", exc)
    ''')
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(site)))
    assert res.returncode == 0 and res.stdout.startswith("ok:"), res.stderr
    assert "entry point broken_plugin:Thing" in res.stdout


def test_wrong_base_and_duplicates_marked(site):
    res = conan(["list", "--json"], site)
    data = json.loads(res.stdout)
    wrong = next(r for r in data["contrastive_losses"] if r["key"] == "acme/x")
    assert "does not subclass" in wrong["error"]
    dup = next(r for r in data["miners"] if r["key"] == "acme/dup")
    assert "duplicate registry key 'acme/dup'" in dup["error"]
    assert "clash-plugin" in dup["error"] and "clash-plugin-two" in dup["error"]


def test_disable_switch(site):
    res = conan(["list", "mask_schedules", "--json"], site, CONAN_DISABLE_PLUGINS="1")
    keys = [r["key"] for r in json.loads(res.stdout)["mask_schedules"]]
    assert "acme/half" not in keys and "linear" in keys


def test_example_plugin_is_installed():
    """The Makefile installs plugins/conan-example; `conan list` shows it with its distribution."""
    res = subprocess.run([sys.executable, "-m", "conan_core.cli", "list", "mask_schedules"],
                         capture_output=True, text=True, timeout=120)
    line = next(l for l in res.stdout.splitlines() if "example/exponential" in l)
    assert "plugin conan-example 0.1.0" in line


# A contrastive loss written against another call shape: no ``positive_ids`` / ``negative_ids``.
OFF_CONTRACT = '''
import torch
from conan_core.losses.base import ContrastiveLoss, LossOutput
from conan_core.registry import ComponentConfig

class Dot(ContrastiveLoss):
    class Config(ComponentConfig):
        scale: float = 1.0
    def forward(self, query, positive, negatives=None, *, query_ids=None):
        return LossOutput(loss=-(query * positive).sum(-1).mean())

class Good(ContrastiveLoss):
    class Config(ComponentConfig):
        scale: float = 1.0
    def forward(self, query, positive, negatives=None, **ids):
        scores = None if negatives is None else torch.einsum("bh,bnh->bn", query, negatives).detach().float()
        return LossOutput(loss=-self.config.scale * (query * positive).sum(-1).mean(), neg_scores=scores)
'''


@pytest.fixture
def loss_site(tmp_path):
    make_dist(tmp_path, "loss-plugin", "loss_plugin", OFF_CONTRACT,
              {"conan_core.contrastive_losses": {"acme/dot": "loss_plugin:Dot", "acme/good": "loss_plugin:Good"},
               "conan_core.losses": {"acme/old": "loss_plugin:Good"}})
    return tmp_path


def test_a_plugin_loss_off_its_kinds_contract_fails_validate_and_conformance(loss_site):
    res = conan(["validate", "tiny", "--set", "supervised.loss.loss.type=acme/dot"], loss_site)
    assert res.returncode == 2, res.stderr
    assert "supervised.loss.loss.type" in res.stderr and "contrastive_losses contract" in res.stderr
    assert "positive_ids" in res.stderr  # what the trainer passes and the plugin cannot take
    listed = {r["key"]: r for r in json.loads(conan(["list", "contrastive_losses", "--json"], loss_site).stdout)[
        "contrastive_losses"]}
    assert "contract" in listed["acme/dot"]["error"] and listed["acme/good"]["error"] is None
    code = textwrap.dedent('''
        from conan_core.errors import PluginError
        from conan_core.testing import check_component
        check_component("contrastive_losses", "acme/good")
        try:
            check_component("contrastive_losses", "acme/dot")
        except PluginError as exc:
            print("refused:", exc)
    ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(loss_site)))
    assert done.returncode == 0 and done.stdout.startswith("refused:"), done.stderr
    assert conan(["validate", "tiny", "--set", "supervised.loss.loss.type=acme/good"], loss_site).returncode == 0


def test_a_key_in_the_wrong_slot_names_both_kinds(loss_site):
    res = conan(["validate", "tiny", "--set", "pretrain.loss.type=info_nce"], loss_site)
    assert res.returncode == 2
    assert "pretrain.loss.type" in res.stderr
    assert "'info_nce' is a contrastive_losses key, and this slot takes lm_losses keys" in res.stderr


def test_the_retired_losses_group_is_named_not_loaded(loss_site):
    res = conan(["list", "--json"], loss_site)
    assert res.returncode == 0, res.stderr
    assert "acme/old" not in res.stdout
    assert "retired entry-point group conan_core.losses" in res.stderr and "contrastive_losses" in res.stderr

