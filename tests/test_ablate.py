"""The ablation grid: every variant is a valid config, presets match the grid, the table format."""

import pytest

from conan_core.ablate import VARIANTS, format_table
from conan_core.config import load_config, resolve

PRESET_OF = {"abrupt": "tiny-abrupt", "accelerating": "tiny-accelerating", "decelerating": "tiny-decelerating",
             "no_dhnm": "tiny-no-dhnm", "dhnm_v1": "tiny-dhnm-v1", "no_clr": "tiny-no-clr", "cbb": "tiny-cbb"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_is_valid(variant):
    cfg = load_config("tiny", VARIANTS[variant])
    assert cfg.name == "tiny"


@pytest.mark.parametrize("variant,preset", sorted(PRESET_OF.items()))
def test_ablation_preset_equals_grid_variant(variant, preset):
    grid = resolve(load_config("tiny", VARIANTS[variant]))
    named = resolve(load_config(preset))
    named["name"] = grid["name"]
    assert named == grid


def test_format_table_mean_and_std():
    results = {"full": [{"retrieval": {"ndcg@10": 0.5}, "sts": {"spearman": 0.2}},
                        {"retrieval": {"ndcg@10": 0.7}, "sts": {"spearman": 0.4}}],
               "abrupt": [{"retrieval": {"ndcg@10": 0.1}}]}
    table = format_table(results).splitlines()
    assert table[0].startswith("| variant | retrieval nDCG@10")
    assert table[2] == "| full | 0.6000 ± 0.1414 | - | 0.3000 ± 0.1414 | - |"
    assert table[3] == "| abrupt | 0.1000 | - | - | - |"
