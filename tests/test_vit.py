"""SAM ViT encoder pieces: windowing, relative positions, windowed vs global attention."""

from __future__ import annotations

import torch

from repvit_sam.modeling.vit import Block, get_rel_pos, window_partition, window_unpartition


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 10, 13, 4)
    windows, pad_hw = window_partition(x, 6)
    assert pad_hw == (12, 18) and windows.shape == (2 * 2 * 3, 6, 6, 4)
    # the padded region is zeros and each window is the matching tile
    torch.testing.assert_close(windows[1], x[0, 0:6, 6:12])
    assert windows[2][:, 1:].abs().sum() == 0  # columns 13..17 of the third tile are padding
    torch.testing.assert_close(window_unpartition(windows, 6, pad_hw, (10, 13)), x)


def test_get_rel_pos_indexes_by_offset():
    table = torch.arange(9 * 2, dtype=torch.float).view(9, 2)  # 2*5-1 rows, 2 channels
    r = get_rel_pos(5, 5, table)
    assert r.shape == (5, 5, 2)
    for i in range(5):
        for j in range(5):
            torch.testing.assert_close(r[i, j], table[i - j + 4])


def test_get_rel_pos_resamples_a_short_table_linearly():
    table = torch.tensor([[0.0], [2.0], [4.0]])  # 3 rows for a size-2 grid, asked for size 3 (5 rows)
    r = get_rel_pos(3, 3, table)
    assert r.shape == (3, 3, 1)
    diag = r[torch.arange(3), torch.arange(3), 0]
    assert torch.allclose(diag, diag[0].expand(3))  # zero offset -> the same (middle) entry


def test_window_covering_the_grid_equals_global_attention():
    torch.manual_seed(0)
    windowed = Block(32, 2, 4.0, window_size=8, input_size=(8, 8))
    global_ = Block(32, 2, 4.0, window_size=0, input_size=(8, 8))
    with torch.no_grad():
        for p in windowed.parameters():
            p.normal_(0, 0.2)
    global_.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x), global_(x))
        # with smaller windows the answer must change (windows really are separate)
        small = Block(32, 2, 4.0, window_size=4, input_size=(8, 8))
        sd = {k: v for k, v in windowed.state_dict().items() if "rel_pos" not in k}
        small.load_state_dict(sd, strict=False)
        assert not torch.allclose(small(x), windowed(x))
