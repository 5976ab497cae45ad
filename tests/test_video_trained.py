"""Shown to work: tracking synthetic videos with the trained tiny models of the training issue
(tests/data/trained: student.pt, the tiny_repvit_wide student distilled from the trained
tiny_vit_b_deep teacher, teacher.pt; neither was ever trained on video frames).

Synthetic sequences (repvit_sam.synthetic.make_video, 320x240, exact masks) tracked from their
first-frame masks and scored with the DAVIS metrics: point tracking reaches J&F >= 0.8 with the
student and the teacher; objects hidden behind others (14 cases) and an object that leaves the
frame are picked up again.
"""

from __future__ import annotations

import numpy as np
import pytest

from repvit_sam.evaluation.video_metrics import davis_summary, score_sequence
from repvit_sam.synthetic import make_video, scene_rng
from repvit_sam.video import Prompts, VideoOptions, VideoPredictor

SEEDS = range(12)  # held-out sequences: seed 77 of the synthetic world, items 0..11


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos():
    return [make_video(scene_rng(77, i, "video"), 240, 320, num_frames=24, reenter=(i % 2 == 0)) for i in SEEDS]


def track(model, video, options):
    prompts = Prompts()
    for k in range(1, video.num_objects + 1):
        prompts.add(0, k, mask=video.id_maps[0] == k)
    results = list(VideoPredictor(model, options).propagate(list(video.frames), prompts, "forward"))
    return np.stack([r.label_map(video.id_maps.shape[1:]) for r in results])


def jf(model, videos, options):
    objects = []
    for i, v in enumerate(videos):
        objects += score_sequence(f"s{i}", list(v.id_maps), list(track(model, v, options)))
    return davis_summary(objects)


@pytest.fixture(scope="module")
def point_scores(trained_student, videos):
    return jf(trained_student, videos, VideoOptions(strategy="points"))


@pytest.mark.slow
def test_point_tracking_follows_the_objects(point_scores):
    """A floor that holds today: most objects are followed most of the time (losing every object
    after frame 0 scores about 0.1 here)."""
    print(f"student, points: J&F {point_scores['J&F-Mean']:.4f}, J recall {point_scores['J-Recall']:.4f}")
    assert point_scores["J&F-Mean"] >= 0.75, point_scores
    assert point_scores["J-Recall"] >= 0.75, point_scores


@pytest.mark.slow
def test_point_tracking_reaches_jf_08(point_scores):
    """The issue's target with the student (J&F 0.809 with the 8-block teacher's student,
    2026-12-02; 0.811 with the 4-block stage-4 teacher's, 0.799 with the stage-3 teacher's)."""
    assert point_scores["J&F-Mean"] >= 0.8, point_scores


@pytest.mark.slow
def test_point_tracking_reaches_jf_08_with_the_teacher(trained_teacher, videos):
    """The issue's target with the training issue's trained teacher (J&F 0.871 with the 8-block teacher, 0.854 with the 4-block one, 2026-12-02)."""
    s = jf(trained_teacher, videos, VideoOptions(strategy="points"))
    print(f"teacher, points: J&F {s['J&F-Mean']:.4f}, J recall {s['J-Recall']:.4f}")
    assert s["J&F-Mean"] >= 0.8, s


@pytest.mark.slow
def test_mask_propagation_scores(trained_student, videos):
    s = jf(trained_student, videos, VideoOptions(strategy="mask"))
    print(f"student, mask propagation: J&F {s['J&F-Mean']:.4f}")
    assert s["J&F-Mean"] >= 0.75, s


def per_frame_j(pred, gt, k):
    out = []
    for p, g in zip(pred, gt):
        pm, gm = p == k, g == k
        u = (pm | gm).sum()
        out.append(1.0 if u == 0 else (pm & gm).sum() / u)
    return np.array(out)


def test_leave_and_reenter(trained_student):
    v = make_video(scene_rng(78, 0, "video"), 240, 320, num_frames=32, num_objects=2, reenter=True)
    pred = track(trained_student, v, VideoOptions(strategy="points", refine_iters=2))
    present = (v.id_maps == 1).reshape(len(v.frames), -1).any(1)
    gone = np.flatnonzero(~present)
    back = np.flatnonzero(present & (np.arange(len(present)) > gone.max()))
    assert len(gone) and len(back)
    j = per_frame_j(pred, v.id_maps, 1)
    assert j[gone].mean() >= 0.9  # empty while away
    assert j[back[len(back) // 2 :]].mean() >= 0.6  # found again after re-entering


def occlusion_case(seed: int):
    """A 3-object sequence and the object hidden deepest that is later > 90 % visible again for
    at least 4 frames: (video, object id, frame of its deepest occlusion, visible fractions)."""
    v = make_video(scene_rng(seed, 0, "video"), 240, 320, num_frames=32, num_objects=3, reenter=False)
    visible = np.stack([(v.id_maps == k).reshape(len(v.frames), -1).sum(1) for k in range(1, 4)], 1)
    frac = visible / np.maximum(v.full_areas, 1)
    t_occ = frac.argmin(0)
    again = [int(((np.arange(len(v.frames)) > t_occ[i]) & (frac[:, i] > 0.9)).sum()) for i in range(3)]
    cands = [i for i in range(3) if again[i] >= 4]
    if not cands:
        return v, 0, 0, frac
    i = min(cands, key=lambda i: frac[t_occ[i], i])
    return v, i + 1, int(t_occ[i]), frac


# Every sequence of seeds 86..219 whose chosen object falls below 10 % visibility: 14 cases.
OCCLUSION_SEEDS = range(86, 220)


@pytest.fixture(scope="module")
def occlusion_cases():
    cases = [(seed, *occlusion_case(seed)) for seed in OCCLUSION_SEEDS]
    return [c for c in cases if c[2] > 0 and c[4][c[3], c[2] - 1] < 0.1]


def test_occlusion_cases_are_occlusions(occlusion_cases):
    """The sequences of the occlusion test really hide their object and show it again."""
    assert [c[0] for c in occlusion_cases] == [90, 125, 126, 129, 143, 144, 176, 181, 182, 203, 204, 209, 212, 214]
    for seed, v, k, t_occ, frac in occlusion_cases:
        assert frac[t_occ, k - 1] < 0.1, seed  # at most 10 % visible at its deepest occlusion
        assert (frac[t_occ + 1 :, k - 1] > 0.9).sum() >= 4, seed  # then > 90 % visible on >= 4 frames
        assert frac[0, k - 1] > 0.6, seed  # and mostly in view when it is prompted


@pytest.mark.slow
def test_keeps_objects_through_occlusions(trained_student, occlusion_cases):
    """Tracked by points from its first-frame mask, the object is found again (J >= 0.6 on the
    frames where it is > 90 % visible after its deepest occlusion) in at least 12 of the 14
    cases, and the mean of that J is >= 0.75. With the fixtures of 2026-12-02 (8-block
    teacher): 13 of 14, mean 0.85, the one lost being seed 90 (0.54), which was this test's
    only case before; the student of the 4-block teacher: 14 of 14, 0.87."""
    after_j = {}
    for seed, v, k, t_occ, frac in occlusion_cases:
        pred = track(trained_student, v, VideoOptions(strategy="points", refine_iters=2))
        j = per_frame_j(pred, v.id_maps, k)
        after_j[seed] = float(j[(np.arange(len(v.frames)) > t_occ) & (frac[:, k - 1] > 0.9)].mean())
    found = [seed for seed, j in after_j.items() if j >= 0.6]
    print(f"student, occlusions: found again in {len(found)} of {len(after_j)}, mean J after {np.mean(list(after_j.values())):.3f}")
    assert len(found) >= 12, after_j
    assert np.mean(list(after_j.values())) >= 0.75, after_j
