"""RoPE tables and per-segment positions against float64 / hand-written references."""

import torch

from conan_core.model.rope import apply_rope, default_position_ids, positions_from_segments, rope_tables
from tests.model.model_reference import rope64


def test_rope_matches_complex_rotation_in_float64():
    x = torch.randn(2, 3, 5, 16)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 100, 2000, 30000, 5]])
    cos, sin = rope_tables(positions, 16, 10000.0, torch.float32)
    assert cos.shape == (2, 1, 5, 16)
    ours = apply_rope(x, cos, sin)
    ref = rope64(x.double().transpose(1, 2), positions, 10000.0).transpose(1, 2)
    assert (ours.double() - ref).abs().max() < 1e-4  # float32 angles at position 30000
    cos64, sin64 = rope_tables(positions, 16, 10000.0, torch.float64)  # reference runs: float64 angles
    assert (apply_rope(x.double(), cos64, sin64) - ref).abs().max() < 1e-9


def test_rope_scores_depend_only_on_offsets():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8).double(), torch.randn(1, 1, 1, 8).double()

    def score(pq, pk):
        cq, sq = rope_tables(torch.tensor([[pq]]), 8, 100.0, torch.float64)
        ck, sk = rope_tables(torch.tensor([[pk]]), 8, 100.0, torch.float64)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    assert abs(score(5, 2) - score(13, 10)) < 1e-9
    assert abs(score(5, 2) - score(5, 3)) > 1e-6


def test_positions_restart_per_segment():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2], [4, 4, 4, 4, 4, 4, 9, 9]])
    assert positions_from_segments(seg).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 0, 1]]
    assert default_position_ids(2, 4, torch.device("cpu")).tolist() == [[0, 1, 2, 3]] * 2
    assert torch.equal(default_position_ids(2, 8, torch.device("cpu"), seg), positions_from_segments(seg))
