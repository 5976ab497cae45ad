"""Training prompts drawn from masks (repvit_sam.train.prompting) and the mask losses."""

from __future__ import annotations

import pytest
import torch

from repvit_sam.train.losses import bce_loss, dice_loss, focal_loss, mask_ious
from repvit_sam.train.prompting import boxes_from_masks, correction_clicks, jitter_boxes, sample_in


def _masks():
    m = torch.zeros((3, 40, 50), dtype=torch.bool)
    m[0, 5:15, 10:30] = True  # rows 5..14, cols 10..29
    m[1, 0, 0] = True  # one pixel
    return m  # m[2] empty


def test_boxes_follow_the_sa1b_convention():
    b = boxes_from_masks(_masks())
    assert b.tolist() == [[10, 5, 29, 14], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_jitter_stays_within_ten_percent_of_the_side_and_the_cap():
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[100.0, 100.0, 300.0, 140.0]]).repeat(500, 1)  # 200 wide, 40 high
    out = jitter_boxes(boxes, torch.ones(500), 1024, g)
    d = (out - boxes).abs()
    assert d[:, [0, 2]].max() <= 20.0 + 1e-4 and d[:, [0, 2]].max() > 15.0  # 10% of 200 = 20 (= the cap)
    assert d[:, [1, 3]].max() <= 4.0 + 1e-4 and d[:, [1, 3]].max() > 3.0  # 10% of 40
    small_scale = jitter_boxes(torch.tensor([[0.0, 0.0, 900.0, 900.0]]).repeat(200, 1), torch.full((200,), 0.5), 1024, g)
    assert (small_scale - torch.tensor([0.0, 0.0, 900.0, 900.0])).abs().max() <= 10.0 + 1e-4  # 20 original px at scale 0.5
    assert (out[:, 0] <= out[:, 2]).all() and (out >= 0).all()


def test_points_are_drawn_uniformly_inside_the_mask():
    m = _masks()
    g = torch.Generator().manual_seed(1)
    xs = []
    for _ in range(200):
        xy, has = sample_in(m, g)
        assert has.tolist() == [True, True, False]
        x, y = int(xy[0, 0]), int(xy[0, 1])
        assert m[0, y, x]
        assert xy[1].tolist() == [0.0, 0.0]
        xs.append(x)
    assert min(xs) <= 12 and max(xs) >= 27  # spread over the mask, not one spot


def test_correction_clicks_fall_in_the_error_and_carry_its_sign():
    target = torch.zeros((3, 20, 20), dtype=torch.bool)
    target[:, 5:15, 5:15] = True
    pred = target.clone()
    pred[0, 5:15, 5:10] = False  # missed pixels -> positive click
    pred[1, 0:3, 0:3] = True  # extra pixels -> negative click
    g = torch.Generator().manual_seed(2)
    xy, labels = correction_clicks(pred, target, g)
    assert labels.tolist() == [1, 0, -1]  # row 2 is exact: "not a point"
    x0, y0 = xy[0].long().tolist()
    assert 5 <= x0 < 10 and 5 <= y0 < 15
    x1, y1 = xy[1].long().tolist()
    assert x1 < 3 and y1 < 3


def test_losses_values():
    t = torch.zeros((1, 4, 4))
    t[0, :2] = 1
    good = (t * 2 - 1) * 20  # confident and right
    bad = -good
    assert focal_loss(good, t).item() < 1e-6 < focal_loss(bad, t).item()
    assert dice_loss(good, t).item() == pytest.approx(0.0, abs=1e-6)
    # dice of an all-0.5 prediction: 1 - (2 * 4 + 1) / (8 + 8 + 1)
    assert dice_loss(torch.zeros((1, 4, 4)), t).item() == pytest.approx(1 - 9 / 17, abs=1e-6)
    assert bce_loss(torch.zeros((1, 4, 4)), t).item() == pytest.approx(0.693147, abs=1e-5)  # ln 2
    # focal at p = 0.5: alpha_t * 0.25 * ln 2, alpha 0.25 on positives, 0.75 on negatives (half each)
    assert focal_loss(torch.zeros((1, 4, 4)), t).item() == pytest.approx(0.5 * (0.25 + 0.75) * 0.25 * 0.693147, abs=1e-5)
    assert mask_ious(good > 0, t).tolist() == [1.0]
    assert mask_ious(torch.zeros((1, 4, 4), dtype=torch.bool), torch.zeros((1, 4, 4))).tolist() == [1.0]


def test_prompt_loop_mask_loss_choice():
    """``mask_loss`` picks the loss the loop trains with: SAM's focal x20 + dice against ground
    truth by default, BCE x5 + Dice x5 on request (and by default against a teacher)."""
    from repvit_sam import build_from_config
    from repvit_sam.train.objectives import MASK_LOSSES, PromptLoop

    from conftest import TINY

    sam = build_from_config(TINY["repvit"])
    logits = torch.randn((3, 8, 8), generator=torch.Generator().manual_seed(0))
    target = (torch.rand((3, 8, 8), generator=torch.Generator().manual_seed(1)) > 0.5).float()
    sam_loss = 20 * focal_loss(logits, target) + dice_loss(logits, target)
    bce_dice = 5 * bce_loss(logits, target) + 5 * dice_loss(logits, target)
    assert torch.allclose(PromptLoop(sam).loss_fn(logits, target), sam_loss)
    assert torch.allclose(PromptLoop(sam, mask_loss="bce-dice").loss_fn(logits, target), bce_dice)
    assert torch.allclose(PromptLoop(sam, teacher=build_from_config(TINY["repvit"])).loss_fn(logits, target), bce_dice)
    assert sorted(MASK_LOSSES) == ["bce-dice", "sam"]
    with pytest.raises(ValueError, match="mask_loss must be one of sam, bce-dice, got 'l2'"):
        PromptLoop(sam, mask_loss="l2")


def test_sample_in_is_uniform_over_the_region_pixels():
    # 5 scattered pixels in each of 400 copies: every pixel drawn about 1/5 of the time
    region = torch.zeros((400, 16, 16), dtype=torch.bool)
    spots = [(0, 0), (3, 15), (7, 2), (15, 15), (9, 9)]
    for y, x in spots:
        region[:, y, x] = True
    g = torch.Generator().manual_seed(3)
    counts = {s: 0 for s in spots}
    for _ in range(10):
        xy, has = sample_in(region, g)
        assert has.all()
        for x, y in xy.long().tolist():
            counts[(y, x)] += 1  # a KeyError here is a pixel outside the region
    assert all(600 <= c <= 1000 for c in counts.values()), counts  # 800 expected each, sd ~ 25
