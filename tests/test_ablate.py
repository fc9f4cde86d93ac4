"""Ablation grids: shipped grids validate, presets match the leave-one-out grid, statistics are
right, variants share runs by config, a variant may not change shared stages, and a small grid
runs end to end with a variant joining it later without retraining the rest."""

import json
import math

import pytest

from conan_core.ablate import (GridResult, check_shared, config_key, format_grid_table, format_grid_tables,
                               grid_names, load_grid, paired_test, run_grid, variant_config)
from conan_core.config import load_config, resolve
from conan_core.errors import ConanError, ConfigError

PRESET_OF = {"abrupt": "tiny-abrupt", "accelerating": "tiny-accelerating", "decelerating": "tiny-decelerating",
             "no_dhnm": "tiny-no-dhnm", "dhnm_v1": "tiny-dhnm-v1", "no_clr": "tiny-no-clr", "cbb": "tiny-cbb"}


@pytest.mark.parametrize("grid", grid_names())
def test_every_shipped_variant_is_a_valid_config(grid):
    g = load_grid(grid)
    assert g.baseline in g.variants
    for overrides in g.variants.values():
        assert load_config("tiny", overrides).name == "tiny"


@pytest.mark.parametrize("variant,preset", sorted(PRESET_OF.items()))
def test_ablation_preset_equals_grid_variant(variant, preset):
    grid = resolve(load_config("tiny", load_grid("leave-one-out").variants[variant]))
    named = resolve(load_config(preset))
    named["name"] = grid["name"]
    assert named == grid


def test_variants_shared_across_grids_share_one_run():
    sm_only = load_grid("paper-table4").variants["sm"]
    assert config_key(variant_config("tiny", [], 0, sm_only)) == \
        config_key(variant_config("tiny", [], 0, load_grid("paper-table12").variants["linear"])) == \
        config_key(variant_config("tiny", [], 0, load_grid("paper-table6").variants["soft"]))
    assert config_key(variant_config("tiny", [], 0, sm_only)) != config_key(variant_config("tiny", [], 1, sm_only))


def test_a_variant_changing_a_shared_stage_is_refused(tmp_path):
    base = load_config("tiny")
    with pytest.raises(ConanError, match="changes pretrain"):
        check_shared(base, load_config("tiny", ["pretrain.steps=5"]), "short")
    (tmp_path / "g.yaml").write_text("extends: paper-table6\nvariants:\n  step: ['weak.mask.schedule.type=step']\n")
    grid = load_grid(str(tmp_path / "g.yaml"))
    assert list(grid.variants) == ["abrupt", "soft", "step"] and grid.baseline == "abrupt"
    (tmp_path / "bad.yaml").write_text("baseline: x\nvariants:\n  a: not-a-list\n")
    with pytest.raises(ConfigError, match="variants.a") as err:
        load_grid(str(tmp_path / "bad.yaml"))
    assert "baseline" in str(err.value)


def test_paired_test_matches_the_t_formula():
    vals, base = [0.50, 0.56, 0.61], [0.45, 0.50, 0.52]
    got = paired_test(vals, base)
    diffs = [0.05, 0.06, 0.09]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    from scipy import stats

    assert got["diff"] == pytest.approx(mean) and got["diff_std"] == pytest.approx(sd)
    assert got["p"] == pytest.approx(2 * stats.t.sf(t, 2))
    assert paired_test([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    assert paired_test([0.5], [0.4])["p"] is None


def test_config_key_ignores_fields_at_their_defaults_and_tells_configs_apart():
    from conan_core.ablate import without_defaults

    defaults = {"a": 1, "b": {"type": "x", "p": 2, "q": [1]}, "c": "d"}
    assert without_defaults({"a": 1, "b": {"type": "x", "p": 2, "q": [1]}, "c": "d"}, defaults) == {}
    assert without_defaults({"a": 1, "b": {"type": "y", "p": 2, "q": [2]}, "c": "d", "new": 0}, defaults) == \
        {"b": {"type": "y", "q": [2]}, "new": 0}
    # a field added later with its default (present on both sides) changes no key
    cfg = variant_config("tiny", [], 0, [])
    with_new = {**resolve(cfg), "added_later": {"flag": True}}
    from conan_core.config import RunConfig

    assert without_defaults(with_new, {**resolve(RunConfig()), "added_later": {"flag": True}}) == \
        without_defaults(resolve(cfg), resolve(RunConfig()))
    keys = {config_key(variant_config("tiny", [], 0, v)) for v in load_grid("paper-table4").variants.values()}
    assert len(keys) == 5  # five different variants, five directories
    assert config_key(variant_config("tiny", [], 0, ["fsdp_mixed_precision=true"])) == \
        config_key(variant_config("tiny", [], 0, []))  # a value set to its default is the same config


def test_table_shows_mean_std_and_the_test_against_the_baseline():
    grid = load_grid("paper-table6")
    result = GridResult(grid=grid, seeds=[0, 1], runs={
        "abrupt": [{"retrieval": {"ndcg@10": 0.5}}, {"retrieval": {"ndcg@10": 0.7}}],
        "soft": [{"retrieval": {"ndcg@10": 0.6}}, {"retrieval": {"ndcg@10": 0.9}}]})
    rows = format_grid_table(result).splitlines()
    assert rows[2] == "| abrupt (baseline) | 0.6000 ± 0.1414 | - | - | - |"
    assert rows[3].startswith("| soft | 0.7500 ± 0.2121 (Δ +0.1500, p ")
    assert "Out of domain" not in format_grid_tables(result)  # no held-out sources evaluated
    for runs, values in zip(result.runs.values(), ([0.2, 0.3], [0.25, 0.4])):
        for run, value in zip(runs, values):
            run["out_of_domain/retrieval"] = {"ndcg@10": value}
    ood = format_grid_tables(result).split("Out of domain (sources no training split holds):")[1].strip().splitlines()
    assert ood[2] == "| abrupt (baseline) | 0.2500 ± 0.0707 | - | - | - |"
    assert ood[3].startswith("| soft | 0.3250 ± 0.1061 (Δ +0.0750, p ")


SHORT = ["data.demo_scale=0.1", "tokenizer.vocab_size=500", "model.hidden_size=32", "model.intermediate_size=64",
         "pretrain.steps=6", "pretrain.batch_size=4", "pretrain.max_length=32", "sft.steps=3", "sft.max_length=32",
         "weak.steps=4", "weak.batch_size=8", "weak.max_length=32", "supervised.steps=4", "supervised.max_length=32",
         "supervised.loss.dims=[16, 32]", "mine.top_k=20", "eval.evaluators=[{type: sts}]"]


@pytest.mark.slow
def test_a_grid_runs_and_a_joining_variant_reuses_everything_else(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: tiny-grid\nbaseline: abrupt\nvariants:\n"
                    "  abrupt: ['weak.mask={type: bidirectional}']\n  soft: []\n")
    result = run_grid("tiny", load_grid(str(path)), seeds=2, out=tmp_path / "out", overrides=SHORT, progress=False)
    assert set(result.runs) == {"abrupt", "soft"} and all(len(v) == 2 for v in result.runs.values())
    assert all("spearman" in r["sts"] for runs in result.runs.values() for r in runs)
    cells = json.loads((tmp_path / "out" / "tiny-grid.json").read_text())["cells"]
    assert "vs_baseline" in cells["soft"]["sts/spearman"] and (tmp_path / "out" / "tiny-grid.md").is_file()
    done = {d: (tmp_path / "out" / d).stat().st_mtime_ns for d in sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").glob("seed*/*/*/DONE"))}

    path.write_text(path.read_text() + "  decel: ['weak.mask.schedule.type=decelerating']\n")
    joined = run_grid("tiny", load_grid(str(path)), seeds=2, out=tmp_path / "out", overrides=SHORT, progress=False)
    assert joined.runs["soft"] == result.runs["soft"] and len(joined.runs["decel"]) == 2
    for rel, mtime in done.items():  # base stages and earlier variants were reused, not retrained
        assert (tmp_path / "out" / rel).stat().st_mtime_ns == mtime, rel
