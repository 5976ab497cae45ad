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
    assert "| mask | 0 | 2 |" in out


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
