"""``repvit-sam bench`` on tiny models: the FLOP counter against hand formulas, the report's
layout (JSON and Markdown), rows for backends that cannot run, and the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

import repvit_sam.backends as backends
import repvit_sam.bench as bench
import repvit_sam.measure as measure
from repvit_sam import build_from_config, cli

from conftest import TINY, randomize_


def _conv_flop(conv: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = conv.kernel_size
    return 2 * out.numel() * (conv.in_channels // conv.groups) * kh * kw


def test_gflop_of_one_conv_is_the_hand_formula():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    # 16 output channels x 16 x 16 output pixels, each 8 x 3 x 3 multiply-accumulates (2 FLOP each)
    assert measure.count_gflop(conv, (1, 8, 32, 32)) * 1e9 == pytest.approx(2 * 16 * 16 * 16 * 8 * 3 * 3, abs=0.5)
    dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
    assert measure.count_gflop(dw, (2, 12, 10, 10)) * 1e9 == pytest.approx(2 * 2 * 12 * 10 * 10 * 9, abs=0.5)


def test_gflop_of_tiny_repvit_is_the_sum_over_its_convolutions():
    """RepViT's arithmetic is all convolutions: the counter equals the per-layer formula summed
    over every conv's actual output (collected with forward hooks on a real pass)."""
    encoder = randomize_(build_from_config(TINY["repvit"])).image_encoder
    total = []
    hooks = [m.register_forward_hook(lambda mod, _, out: total.append(_conv_flop(mod, out)))
             for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        encoder(torch.zeros(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    assert measure.count_gflop(encoder, (1, 3, 256, 256)) * 1e9 == pytest.approx(sum(total), rel=1e-9)


def test_peak_memory_measures_the_growth_within_the_block():
    """Peak growth, not absolute size: 200 MB touched and freed before the block do not count,
    and a 150 MB block peaks 100 MB above a 50 MB one."""
    before = np.ones(200 * 2**20 // 8)
    del before
    peaks = []
    for mb in (50, 150):
        with measure.peak_memory() as mem:
            block = np.ones(mb * 2**20 // 8)  # touched
            del block
        peaks.append(mem["peak_mb"])
    assert None not in peaks
    assert 50 * 0.98 <= peaks[0] < 150, peaks  # the 200 MB from before the block would show here
    assert peaks[1] - peaks[0] == pytest.approx(100, abs=15), peaks


@pytest.fixture(scope="module")
def tiny_report():
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    chosen = ["fused", "bf16"] + (["openvino"] if backends.unavailable_reason("openvino") is None else [])
    return bench.benchmark({"tiny": model}, chosen, runs=2, warmup=1, size=256, decoder_batches=(1, 4),
                           matmul_n=256, progress=False)


def test_report_layout_and_numbers(tiny_report):
    r = tiny_report
    assert set(r) >= {"machine", "results", "decoder"}
    assert r["machine"]["threads"] == torch.get_num_threads() and r["machine"]["matmul_gflops"]["fp32"] > 0
    rows = r["results"]
    assert [row["backend"] for row in rows][:3] == ["eager", "fused", "bf16"]  # eager first: the reference
    gflop = measure.count_gflop(randomize_(build_from_config(TINY["repvit"])).image_encoder, (1, 3, 256, 256))
    for row in rows:
        assert set(bench.RESULT_KEYS) <= set(row) and row["model"] == "tiny" and row["note"] == ""
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["gflop"] == pytest.approx(gflop)
        peak = r["machine"]["matmul_gflops"][row["precision"]]
        assert row["peak_fraction"] == pytest.approx(gflop / (row["median_ms"] / 1e3) / peak)
        assert row["peak_mb"] is not None and row["peak_mb"] >= 0
    eager, fused, bf16 = rows[:3]
    assert eager["cosine"] == 1.0 and eager["rel_err"] == 0.0 and eager["x_eager"] == 1.0
    assert fused["cosine"] > 0.999999 and 0 < fused["rel_err"] < 1e-5
    assert bf16["precision"] == "bf16" and bf16["cosine"] > 0.999 and 1e-5 < bf16["rel_err"] < 3e-2
    assert fused["x_eager"] == pytest.approx(fused["median_ms"] / eager["median_ms"])
    dec = r["decoder"]
    paths = ("module", "fast", "fast-bf16", "predict_torch")
    assert [(d["model"], d["batch"], d["path"]) for d in dec] == [("tiny", b, p) for b in (1, 4) for p in paths]
    for d in dec:
        assert d["per_prompt_ms"] == pytest.approx(d["median_ms"] / d["batch"])
        if d["path"] == "predict_torch":
            assert d["masks"] == [d["batch"], 3, 192, 256]  # 3 candidates per prompt, a 4:3 image
        else:
            assert d["masks"] == [d["batch"], 3, 64, 64]  # low-res logits of the tiny decoder
    json.loads(json.dumps(r))  # JSON-serialisable as it is


def test_markdown_table(tiny_report):
    text = bench.markdown(tiny_report)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| model | backend |"))
    assert "median ms" in header and "peak MB" in header and "GFLOP" in header and "cosine" in header
    rows = [line for line in lines if line.startswith("| tiny |")]
    assert len(rows) == len(tiny_report["results"]) + len(tiny_report["decoder"])
    eager = tiny_report["results"][0]
    assert rows[0].startswith(f"| tiny | eager | {eager['median_ms']:.1f} |") and "| 1.000000 |" in rows[0]
    assert f"{tiny_report['machine']['threads']} threads" in lines[0]


def test_unavailable_and_failing_backends_get_rows_saying_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    real = backends.prepare_encoder

    def flaky(encoder, backend, **kw):
        if backend == "fused-cl":
            raise RuntimeError("out of cheese\nsecond line")
        return real(encoder, backend, **kw)

    monkeypatch.setattr(backends, "prepare_encoder", flaky)
    model = randomize_(build_from_config(TINY["repvit"]))
    r = bench.benchmark({"tiny": model}, ["onnxruntime", "fused-cl", "fused"], runs=1, warmup=0, size=256,
                        decoder_batches=(), matmul_n=128, progress=False)
    by = {row["backend"]: row for row in r["results"]}
    assert list(by) == ["eager", "onnxruntime", "fused-cl", "fused"] and r["decoder"] == []
    assert by["onnxruntime"]["note"] == "unavailable: backend 'onnxruntime' needs onnxruntime: pip install 'repvit-sam[fast]'"
    assert by["fused-cl"]["note"] == "failed: RuntimeError: out of cheese"
    for name in ("onnxruntime", "fused-cl"):
        assert by[name]["median_ms"] is None and by[name]["cosine"] is None
    assert by["fused"]["median_ms"] > 0 and by["fused"]["note"] == ""
    assert "| tiny | fused-cl | – |" in bench.markdown(r)


def test_cli_bench_writes_json_and_prints_the_table(tmp_path, monkeypatch, capsys):
    built = []

    def tiny(name, size, pretrained):
        built.append((name, size, pretrained))
        return randomize_(build_from_config(TINY[name]))

    monkeypatch.setattr(bench, "_build_model", tiny)
    peaks = lambda n, with_cuda: {"matmul_gflops": {"fp32": 100.0, "bf16": 300.0, "int8": None}}  # noqa: E731
    monkeypatch.setattr(bench, "matmul_peaks", peaks)  # measured at the end of the run
    monkeypatch.setattr(measure, "matmul_peaks", peaks)  # and by machine_info at its start
    out = tmp_path / "sub" / "bench.json"
    threads = torch.get_num_threads()
    code = cli.main(["bench", "--models", "repvit", "--backends", "fused", "--runs", "1", "--warmup", "0",
                     "--size", "256", "--decoder-batches", "2", "--threads", "1", "--json", str(out)])
    assert code == 0 and built == [("repvit", 256, False)]
    data = json.loads(out.read_text())
    assert [(r["model"], r["backend"]) for r in data["results"]] == [("repvit", "eager"), ("repvit", "fused")]
    assert data["machine"]["threads"] == 1 and data["decoder"][0]["batch"] == 2
    assert data["machine"]["matmul_gflops"] == {"fp32": 100.0, "bf16": 300.0, "int8": None}
    assert data["results"][1]["peak_fraction"] == pytest.approx(data["results"][1]["gflops"] / 100.0)
    assert "| repvit | fused |" in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # --threads applies to the benchmark only


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--models", "nope"], "unknown model 'nope'"),
        (["--backends", "tensorrt"], "unknown backend 'tensorrt'; choose from eager"),
        (["--size", "100"], "--size must be a multiple of 16"),
        (["--runs", "0"], "expected a whole number >= 1"),
        (["--task", "all"], "invalid choice: 'all'"),
        (["--calibration", "/nonexistent/photos"], "bench --calibration: calibration folder not found: /nonexistent/photos"),
    ],
)
def test_cli_bench_bad_arguments(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(bench, "benchmark", lambda *a, **k: pytest.fail("must not run"))
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_task_everything_gets_the_parsed_arguments(monkeypatch):
    from repvit_sam import bench_everything

    seen = {}
    monkeypatch.setattr(bench, "benchmark", lambda *a, **k: pytest.fail("encoder/decoder not asked for"))
    monkeypatch.setattr(bench_everything, "run", lambda modes, cfg, **kw: seen.update(modes=modes, cfg=cfg) or [])
    assert cli.main(["bench", "--task", "everything", "--models", "vit_t", "--size", "512", "--modes", "fast", "--filters", "none"]) == 0
    assert seen["modes"] == ["fast"]
    assert {k: seen["cfg"][k] for k in ("model", "size", "filters", "points_per_side")} == {
        "model": "vit_t", "size": 512, "filters": "none", "points_per_side": 32}


def test_bench_everything_rows_on_a_tiny_model():
    """Every mode's row: timing, mask count, agreement with the reference (fast fp32: every
    reference mask matched with IoU >= 0.99, scores within 1e-3)."""
    from conftest import TINY

    from repvit_sam import bench_everything

    cfg = {"model": TINY["repvit"], "checkpoint": None, "pretrained": False, "image": None, "size": 96,
           "points_per_side": 4, "filters": "none"}
    rows = bench_everything.run(["fast", "reference", "fast-bf16", "coarse-to-fine"], cfg, progress=False, isolate=False)
    assert [r["mode"] for r in rows] == ["reference", "fast", "fast-bf16", "coarse-to-fine"]
    ref, fast = rows[0], rows[1]
    assert ref["speedup"] == 1.0 and ref["n_masks"] > 0 and max(ref["image_hw"]) == 96
    assert fast["n_masks"] == ref["n_masks"] and fast["agree_matched_iou_ge_0_99"] == ref["n_masks"]
    assert fast["agree_max_predicted_iou_diff"] < 1e-3
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    table = bench_everything.markdown(rows)
    assert table.count("\n") == 1 + len(rows) and "| fast-bf16 |" in table


def test_module_entry_point_is_the_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: repvit-sam bench") and "--backends" in out and "--task" in out


def test_matmul_peak_is_the_better_of_start_and_end():
    machine = {"matmul_gflops": {"fp32": 100.0, "bf16": None, "int8": 50.0}}
    measure.update_peaks(machine, {"matmul_gflops": {"fp32": 90.0, "bf16": 300.0, "int8": 70.0}, "cuda_matmul_gflops": {"fp16": 1e5}})
    assert machine == {"matmul_gflops": {"fp32": 100.0, "bf16": 300.0, "int8": 70.0}, "cuda_matmul_gflops": {"fp16": 1e5}}


def test_calibration_folder_reaches_the_int8_backends_only(tmp_path, monkeypatch, capsys):
    """``bench --calibration DIR``: every int8 backend is prepared on DIR's images, as the
    predictor would prepare them (resized, normalised, padded); fp32 backends get none; the
    report and its table say where the int8 ranges came from. ``--cache-dir`` reaches every
    backend."""
    from PIL import Image

    from repvit_sam.export.mobile import calibration_inputs

    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), rng.integers(0, 256, (200, 100, 3), dtype=np.uint8)]
    for i, photo in enumerate(photos):
        Image.fromarray(photo).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    seen = {}
    real = backends.prepare_encoder

    cache_dirs = {}

    def spy(encoder, backend, **kw):
        seen[backend] = kw.get("calibration")
        cache_dirs[backend] = kw.get("cache_dir")
        return real(encoder, "fused")  # the options are what is checked, not NNCF

    monkeypatch.setattr(backends, "prepare_encoder", spy)
    model = randomize_(build_from_config(TINY["repvit"]))
    monkeypatch.setattr(bench, "_build_model", lambda name, size, pretrained: model)
    code = cli.main(["bench", "--models", "repvit", "--backends", "fused", "int8", "--runs", "1", "--warmup", "0", "--size", "256",
                     "--decoder-batches", "1", "--calibration", str(tmp_path), "--json", str(tmp_path / "r.json"),
                     "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert seen["fused"] is None and len(seen["int8"]) == 2
    assert cache_dirs["fused"] == cache_dirs["int8"] == tmp_path / "cache"
    want = [c[0] for c in calibration_inputs(model, photos, preprocess=False)]
    for got, ref in zip(seen["int8"], want):
        assert got.shape == (1, 3, 256, 256) and torch.equal(got, ref)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["int8_calibration"] == f"2 image(s) from {tmp_path}"
    assert f"int8 calibrated on 2 image(s) from {tmp_path}" in capsys.readouterr().out


def test_predictor_passes_backend_options_to_the_backend(monkeypatch):
    from repvit_sam import SamPredictor

    seen = {}
    monkeypatch.setattr(backends, "prepare_encoder", lambda enc, backend, **kw: seen.update(backend=backend, **kw) or enc)
    model = randomize_(build_from_config(TINY["repvit"]))
    SamPredictor(model, backend="int8", backend_options={"calibration": ["x"], "threads": 1})
    assert seen == {"backend": "int8", "calibration": ["x"], "threads": 1}
    with pytest.raises(ValueError, match="backend_options need a backend"):
        SamPredictor(model, backend_options={"threads": 1})


def test_backends_are_timed_in_interleaved_rounds(monkeypatch):
    """Every backend is prepared and warmed up first, then each round calls every backend once,
    so drift in the machine's speed reaches all of them alike; a backend that fails in a later
    round gets a row saying so and the others keep their times."""
    calls = []
    real = backends.prepare_encoder

    def logged(encoder, backend, **kw):
        fn = real(encoder, "fused" if backend != "eager" else "eager", **kw)

        def run(x):
            calls.append(backend)
            if backend == "fused-cl" and calls.count("fused-cl") == 3:
                raise RuntimeError("lost the device")
            return fn(x)

        return run

    monkeypatch.setattr(backends, "prepare_encoder", logged)
    model = randomize_(build_from_config(TINY["repvit"]))
    r = bench.benchmark({"tiny": model}, ["fused", "fused-cl"], runs=3, warmup=1, size=256, decoder_batches=(),
                        matmul_n=128, progress=False)
    assert calls == ["eager", "fused", "fused-cl"] + ["eager", "fused", "fused-cl"] * 2 + ["eager", "fused"]
    by = {row["backend"]: row for row in r["results"]}
    assert by["fused-cl"]["note"] == "failed: RuntimeError: lost the device" and by["fused-cl"]["median_ms"] is None
    assert by["fused"]["median_ms"] > 0 and by["fused"]["cosine"] == pytest.approx(1.0, abs=1e-6)
