"""VideoPredictor mechanics on every tiny variant (random weights: shapes, coverage, batching,
encoder calls, prompt validation). Behaviour on meaningful masks: test_video_trained.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from repvit_sam.inference.prompts import PromptError
from repvit_sam.synthetic import make_video
from repvit_sam.video import FrameError, Prompts, VideoOptions, VideoPredictor


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def video():
    return make_video(np.random.default_rng(3), 96, 128, num_frames=8, num_objects=2, reenter=False)


FAST = VideoOptions(refine_iters=1, iou_threshold=0.0, redetect=False)


@pytest.mark.parametrize("strategy", ["points", "mask"])
def test_both_directions_cover_every_frame_once(tiny_model, video, strategy):
    vp = VideoPredictor(tiny_model, dataclasses.replace(FAST, strategy=strategy))
    prompts = Prompts()
    m1 = video.id_maps[3] == 1
    prompts.add(3, 1, mask=m1)
    prompts.add(3, 2, box=[10, 10, 60, 50])
    results = list(vp.propagate(list(video.frames), prompts))
    # backward sweep first (3, 2, 1, 0), then forward (4..7); frame 3 once, from the forward sweep
    assert [r.index for r in results] == [2, 1, 0, 3, 4, 5, 6, 7]
    assert vp.frames_encoded == 8  # frame 3 is shared by both sweeps: embedded once
    for r in results:
        assert sorted(r.masks) == [1, 2]
        assert all(m.shape == (96, 128) and m.dtype == bool for m in r.masks.values())
    prompted = results[3]
    np.testing.assert_array_equal(prompted.masks[1], m1)  # a given mask is the prompted frame's answer
    assert prompted.scores[1] == 1.0
    labels = prompted.label_map()
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}


def test_objects_prompted_on_different_frames(tiny_model, video):
    vp = VideoPredictor(tiny_model, FAST)
    prompts = Prompts()
    prompts.add(1, 1, mask=video.id_maps[1] == 1)
    prompts.add(5, 2, mask=video.id_maps[5] == 2)
    results = {r.index: r for r in vp.propagate(video.frames, prompts)}
    assert sorted(results) == list(range(8))
    assert all(sorted(r.masks) == [1, 2] for r in results.values())  # merged from both sweeps
    np.testing.assert_array_equal(results[5].masks[2], video.id_maps[5] == 2)
    np.testing.assert_array_equal(results[1].masks[1], video.id_maps[1] == 1)
    assert vp.frames_encoded == 8  # frames 1..5 kept from the backward sweep
    # one direction only
    fwd = [r.index for r in VideoPredictor(tiny_model, FAST).propagate(video.frames, prompts, "forward")]
    bwd = [r.index for r in VideoPredictor(tiny_model, FAST).propagate(video.frames, prompts, "backward")]
    assert fwd == list(range(1, 8)) and bwd == list(range(5, -1, -1))


def test_batched_decoding_equals_one_object_at_a_time(tiny_model, video):
    """Mask propagation with one point per object has no padding: decoding two objects in one
    call must give what each gives alone."""
    opts = dataclasses.replace(FAST, strategy="mask", mask_points=1, refine_iters=2, exclusive=False, verify_threshold=-1.0)
    together = Prompts()
    alone = []
    for k in (1, 2):
        m = video.id_maps[0] == k
        together.add(0, k, mask=m)
        p = Prompts()
        p.add(0, k, mask=m)
        alone.append(p)
    both = list(VideoPredictor(tiny_model, opts).propagate(video.frames, together))
    single = [list(VideoPredictor(tiny_model, opts).propagate(video.frames, p)) for p in alone]
    for t in range(8):
        for k in (1, 2):
            a, b = both[t].masks[k], single[k - 1][t].masks[k]
            assert (a != b).mean() < 1e-3, f"frame {t} object {k}"
            assert both[t].scores[k] == pytest.approx(single[k - 1][t].scores[k], abs=1e-4)


def test_points_strategy_reports_tracked_points(tiny_model, video):
    opts = dataclasses.replace(FAST, positive_points=5, negative_points=2)
    prompts = Prompts()
    prompts.add(0, 1, mask=video.id_maps[0] == 1)
    first = next(iter(VideoPredictor(tiny_model, opts).propagate(video.frames, prompts)))
    pts, labels = first.points[1]
    assert pts.shape == (7, 2) and labels.tolist() == [1] * 5 + [0] * 2
    m = video.id_maps[0] == 1
    assert m[pts[:5, 1].astype(int), pts[:5, 0].astype(int)].all()


def test_prompt_errors(tiny_model, video):
    p = Prompts()
    p.add(0, 1, points=[[10, 10]], labels=[1])
    p.add(0, 1, points=[[20, 20]], labels=[0])  # more points for the same object: fine
    assert p.objects[1].points.shape == (2, 2)
    with pytest.raises(PromptError, match="object id 1 is already prompted on frame 0"):
        p.add(4, 1, box=[0, 0, 5, 5])
    p.add(0, 1, box=[0, 0, 5, 5])
    with pytest.raises(PromptError, match="already has a box"):
        p.add(0, 1, box=[0, 0, 6, 6])
    with pytest.raises(PromptError, match="a mask prompt stands alone"):
        p.add(0, 1, mask=np.ones((96, 128), bool))
    with pytest.raises(PromptError, match="object ids are integers >= 1"):
        p.add(0, 0, points=[[1, 1]])
    vp = VideoPredictor(tiny_model, FAST)
    late = Prompts()
    late.add(8, 1, points=[[10, 10]])
    with pytest.raises(PromptError, match="prompted on frame 8, but the video has 8 frames"):
        next(iter(vp.propagate(video.frames, late)))
    small = Prompts()
    small.add(0, 1, mask=np.ones((40, 50), bool))
    with pytest.raises(PromptError, match="the mask is 50x40 but the frames are 128x96"):
        next(iter(vp.propagate(video.frames, small)))
    outside = Prompts()
    outside.add(0, 1, points=[[500, 10]])
    with pytest.raises(PromptError, match="outside the 128x96 image"):
        next(iter(vp.propagate(video.frames, outside)))
    with pytest.raises(PromptError, match="no prompts"):
        next(iter(vp.propagate(video.frames, Prompts())))
    assert vp.frames_encoded == 0  # refused before any frame was encoded


def test_frames_of_another_size_stop_with_one_line(tiny_model, video):
    frames = list(video.frames[:4]) + [np.zeros((90, 128, 3), np.uint8)]
    prompts = Prompts()
    prompts.add(0, 1, mask=video.id_maps[0] == 1)
    seen = []
    with pytest.raises(FrameError, match="frame 4 of the frame list is 128x90"):
        for r in VideoPredictor(tiny_model, FAST).propagate(frames, prompts):
            seen.append(r.index)
    assert seen == [0, 1, 2, 3]  # results up to the bad frame were delivered


def test_options_are_checked():
    with pytest.raises(ValueError, match="strategy must be one of points, mask"):
        VideoOptions(strategy="flow")
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        VideoOptions(iou_threshold=1.5)
    with pytest.raises(ValueError, match="positive_points must be at least 1"):
        VideoOptions(positive_points=0)
    with pytest.raises(ValueError, match="decoder_precision must be one of auto, fp32, bf16, got 'fp16'"):
        VideoOptions(decoder_precision="fp16")


@pytest.mark.parametrize("precision, backend, expected", [
    ("auto", None, torch.float32), ("auto", "openvino", torch.float32), ("auto", "openvino-bf16", torch.bfloat16),
    ("auto", "bf16", torch.bfloat16), ("auto", "cuda-bf16", torch.bfloat16), ("fp32", "openvino-bf16", torch.float32),
    ("bf16", None, torch.bfloat16),
])
def test_decoder_precision_follows_the_encoder_backend_when_auto(tiny_model, precision, backend, expected):
    from repvit_sam.video.options import decoder_dtype

    assert decoder_dtype(precision, backend) == expected
    if backend is None:  # the predictor's decoder takes it
        vp = VideoPredictor(tiny_model, VideoOptions(decoder_precision=precision))
        assert vp.decoder.dtype == expected


def test_label_map_gives_overlaps_to_the_higher_score():
    from repvit_sam.video.prompts import FrameResult

    a = np.zeros((4, 5), bool)
    a[:, :3] = True
    b = np.zeros((4, 5), bool)
    b[:, 2:] = True
    labels = FrameResult(0, {1: a, 2: b}, {1: 0.6, 2: 0.9}).label_map()
    np.testing.assert_array_equal(labels[0], [1, 1, 2, 2, 2])  # column 2 is b's (0.9 > 0.6)
    labels = FrameResult(0, {1: a, 2: b}, {1: 0.9, 2: 0.9}).label_map()
    np.testing.assert_array_equal(labels[0], [1, 1, 1, 2, 2])  # a tie goes to the lower id
    with pytest.raises(ValueError, match="ids 1..255"):
        FrameResult(0, {300: a}, {300: 1.0}).label_map()


def test_conflicting_masks_go_to_the_object_they_resemble(tiny_model):
    """Two objects claiming the same region: it goes to the object whose prototype (mean
    embedding under its first mask) it matches; the other comes out empty."""
    import torch.nn.functional as F

    from repvit_sam.video.predictor import _Object

    vp = VideoPredictor(tiny_model, FAST)
    frame = np.zeros((64, 64, 3), np.uint8)
    vp._set_frame(0, frame, None)
    c, gh, gw = vp._features.shape[1:]
    feats = torch.zeros(1, c, gh, gw)
    feats[0, 0, :, : gw // 2] = 1.0  # left half of the embedding: direction e0
    feats[0, 1, :, gw // 2 :] = 1.0  # right half: direction e1
    vp._features = feats
    left = np.zeros((64, 64), bool)
    left[:, :32] = True
    e0, e1 = F.normalize(torch.eye(c)[0], dim=0), F.normalize(torch.eye(c)[1], dim=0)
    objs = {1: _Object(1, left, torch.zeros(0), 0.9, e1), 2: _Object(2, left, torch.zeros(0), 0.8, e0)}
    results = {1: (left.copy(), 0.9, torch.zeros(0)), 2: (left.copy(), 0.8, torch.zeros(0))}
    vp._resolve_conflicts(objs, results)
    assert results[2][0].any() and results[2][1] == 0.8  # the left region looks like object 2
    assert not results[1][0].any() and results[1][1] == 0.0


def test_best_cells_skips_taken_and_padding_cells():
    """Re-detection's search: the most similar embedding cell that is inside the image and not
    covered by an object already found; its centre in the input frame."""
    from repvit_sam.video.appearance import best_cells, prototypes

    # A 64 x 48 (H x W) frame in a 64-px model: the input is 64 high, 48 wide, zero-padded to
    # 64 x 64, so column 3 of the 4 x 4 embedding grid (x 48..63) is padding.
    feats = torch.zeros(1, 4, 4, 4)
    feats[0, 0] = 1.0  # every cell points along e0 ...
    feats[0, 1, 1, 2] = 5.0  # ... except cell (row 1, col 2), mostly e1
    feats[0, 1, 0, 3] = 9.0  # and cell (0, 3), even more so, but it is padding
    feats[0, 1, 3, 0] = 2.0  # and cell (3, 0), a little
    e1 = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    free = np.zeros((64, 48), bool)
    sim, centres = best_cells(e1, feats, free, (64, 48), 64)
    assert centres.tolist() == [[40.0, 24.0]]  # cell (1, 2): x = 2.5 * 16, y = 1.5 * 16
    assert float(sim[0]) == pytest.approx(5 / np.sqrt(26))
    taken = np.zeros((64, 48), bool)
    taken[16:32, 32:48] = True  # an object found on this frame covers cell (1, 2)
    sim2, centres2 = best_cells(e1, feats, taken, (64, 48), 64)
    assert centres2.tolist() == [[8.0, 56.0]]  # the next best free cell: (3, 0)
    assert float(sim2[0]) == pytest.approx(2 / np.sqrt(5))
    proto = prototypes(taken[None], feats, (64, 48), 64)  # the mean embedding under that object
    assert proto.shape == (1, 4) and float(proto[0] @ e1[0]) == pytest.approx(5 / np.sqrt(26))
