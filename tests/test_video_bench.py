"""``repvit-sam bench --task video`` on a tiny model: the report's rows and their arithmetic
(timings themselves are measured by the command, never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli


def test_bench_video_rows_and_json(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        code, out, err = run_cli(["bench", "--task", "video", "--models", "tiny_repvit", "--size", "256", "--backends", "fused",
                                  "--video-frames", "3", "--objects", "1", "2", "--strategies", "mask", "--refine", "0",
                                  "--threads", "1", "--json", tmp_path / "v.json"], capsys)
    finally:
        torch.set_num_threads(n)
    assert code == 0, err
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["task"] == "video" and report["backend"] == "fused" and report["model"] == "tiny_repvit"
    assert report["iou_threshold"] == 0.0  # random weights: nothing dropped as empty
    rows = report["rows"]
    assert [(r["strategy"], r["refine_iters"], r["objects"]) for r in rows] == [("mask", 0, 1), ("mask", 0, 2)]
    for r in rows:
        assert r["frames"] == 3
        assert r["overhead"] == pytest.approx(r["other_ms"] / r["encoder_ms"])
        assert 1000 / r["fps"] == pytest.approx(r["encoder_ms"] + r["other_ms"], rel=1e-6)
        assert r["nonempty_masks"].endswith(f"/{3 * r['objects']}")
        assert r["tracked_overhead"] == pytest.approx(r["tracked_other_ms"] / r["tracked_encoder_ms"])
        assert r["tracked_encoder_ms"] > 0 and r["tracked_other_ms"] > 0
    assert "| mask | 0 | 2 |" in out and "every object tracked" in out.lower()


@pytest.mark.parametrize("strategy", ["mask", "points"])
def test_tracked_measurement_decodes_every_object_on_every_frame(strategy, monkeypatch):
    """The "every object tracked" figure: each timed frame's step gets all the objects, with
    the previous frame's true masks (points strategy: their query points, moved by the point
    tracker onto this frame)."""
    from repvit_sam import build_sam
    from repvit_sam.video import bench as vbench
    from repvit_sam.video.options import VideoOptions
    from repvit_sam.video.predictor import VideoPredictor

    torch.manual_seed(0)
    model = build_sam("tiny_repvit").eval()
    frames, id_maps = vbench.clip(4, 96, 128)
    vp = VideoPredictor(model, VideoOptions(strategy=strategy, refine_iters=0, iou_threshold=0.0), backend="fused")
    seen = []
    step = vp._step_points if strategy == "points" else vp._step_mask

    def spy(objs):
        seen.append(sorted((o.obj_id, int(o.mask.sum())) for o in objs))
        if strategy == "points":
            assert all(len(o.points) == len(o.visible) == len(o.labels) and (o.labels == 1).sum() >= 1 for o in objs)
        return step(objs)

    monkeypatch.setattr(vp, "_step_points" if strategy == "points" else "_step_mask", spy)
    row = vbench.measure_tracked(vp, frames, id_maps, 3)
    assert [[k for k, _ in s] for s in seen] == [[1, 2, 3]] * 3  # frames 1..3, every object
    for t, s in enumerate(seen):  # the states come from the true masks of the frame before
        assert [a for _, a in s] == [int((id_maps[t] == k).sum()) for k in (1, 2, 3)]
    assert row["tracked_overhead"] == pytest.approx(row["tracked_other_ms"] / row["tracked_encoder_ms"])


def test_bench_video_refuses_bad_object_counts(capsys):
    code, _, err = run_cli(["bench", "--task", "video", "--models", "tiny_repvit", "--size", "256", "--objects", "6"], capsys)
    assert code == 2 and "--objects takes 1..5" in err


def test_bf16_backends_only_picked_where_the_cpu_has_bf16(tmp_path, monkeypatch):
    """Emulated bfloat16 is slower than fp32 (OpenVINO bf16: 4x on an AVX-512 Xeon without
    AVX512-BF16), so the default video backend is an fp32 one unless the CPU computes bf16."""
    from repvit_sam import backends
    from repvit_sam.video import bench as vbench

    plain, native = tmp_path / "plain", tmp_path / "native"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert backends.cpu_has_native_bf16(str(plain)) is False
    assert backends.cpu_has_native_bf16(str(native)) is True
    assert backends.cpu_has_native_bf16(str(tmp_path / "missing")) is False

    everything = {name: None for name in backends.BACKENDS}
    monkeypatch.setattr(backends, "available_backends", lambda: everything)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda cpuinfo="": False)
    assert vbench.pick_backend(None) == "openvino"
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda cpuinfo="": True)
    assert vbench.pick_backend(None) == "openvino-bf16"
    assert vbench.pick_backend(["fused"]) == "fused"  # what the user names wins
