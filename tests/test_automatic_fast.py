"""The fast segment-everything path against the reference path.

Three layers of evidence:
1. ``FastDecoder`` computes ``MaskDecoder``'s function (logits and IoU scores) for the tiny
   decoders and for SAM's full-size decoder, with and without mask prompts.
2. With the same synthetic decoder behind both (discs around each point, point-dependent
   scores), the fast pipeline (IoU filter before upscaling, chunking, order) gives exactly the
   reference's records.
3. End to end on random weights, fast and reference records agree (count, IoU, scores).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from repvit_sam import build_from_config
from repvit_sam.config import PromptDecoderConfig
from repvit_sam.inference.amg import decode as amg_decode
from repvit_sam.inference.agreement import compare_records
from repvit_sam.inference.amg import SamAutomaticMaskGenerator
from repvit_sam.inference.amg.decode import FastDecode
from repvit_sam.inference.fast_decoder import FastDecoder, TokenState

from conftest import TINY, randomize_


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY["repvit"]))


@pytest.fixture(scope="module")
def full_decoder_model():
    """Tiny encoder, SAM's full-size prompt encoder and mask decoder (random weights)."""
    cfg = dataclasses.replace(TINY["repvit"], decoder=PromptDecoderConfig())
    torch.manual_seed(1)
    return randomize_(build_from_config(cfg))


def _prompts(model, n, with_box=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.img_size
    coords = torch.rand(n, 2, 2, generator=g) * s
    labels = torch.tensor([[1, 0]] * n, dtype=torch.int)
    boxes = torch.sort(torch.rand(n, 2, 2, generator=g) * s, dim=1).values.flatten(1) if with_box else None
    return coords, labels, boxes


@pytest.mark.parametrize("which", ["tiny", "full"])
@pytest.mark.parametrize("multimask", [True, False])
def test_fast_decoder_matches_mask_decoder(model, full_decoder_model, which, multimask):
    m = model if which == "tiny" else full_decoder_model
    pe, md = m.prompt_encoder, m.mask_decoder
    emb = torch.randn(1, md.transformer_dim, *pe.image_embedding_size, generator=torch.Generator().manual_seed(3))
    coords, labels, boxes = _prompts(m, 5, with_box=True)
    fast = FastDecoder(m)
    fast.set_image(emb)
    with torch.no_grad():
        for masks_in in (None, torch.randn(5, 1, *pe.mask_input_size)):
            sparse, dense = pe(points=(coords, labels), boxes=boxes, masks=masks_in)
            ref, ref_iou = md(emb, pe.get_dense_pe(), sparse, dense, multimask)
            got, got_iou = fast(sparse, dense if masks_in is not None else None, multimask_output=multimask)
            assert got.shape == ref.shape and got_iou.shape == ref_iou.shape
            assert float((got - ref).norm() / ref.norm()) < 1e-5
            torch.testing.assert_close(got_iou, ref_iou, atol=1e-4, rtol=1e-4)


def test_fast_decoder_bf16_close(full_decoder_model):
    m = full_decoder_model
    pe, md = m.prompt_encoder, m.mask_decoder
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(4))
    coords, labels, _ = _prompts(m, 4)
    with torch.no_grad():
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
        ref, _ = md(emb, pe.get_dense_pe(), sparse, dense, True)
    fast = FastDecoder(m, dtype=torch.bfloat16)
    fast.set_image(emb)
    got, _ = fast(sparse)
    assert got.dtype == torch.float32
    rel = float((got - ref).norm() / ref.norm())
    assert 1e-6 < rel < 0.05  # really computed in bf16, and still close
    assert float(((got > 0) == (ref > 0)).float().mean()) > 0.97


def test_fast_decoder_stages_and_errors(model):
    fast = FastDecoder(model)
    sparse = torch.zeros(2, 2, model.mask_decoder.transformer_dim)
    with pytest.raises(RuntimeError, match="set_image"):
        fast.tokens(sparse)
    with pytest.raises(RuntimeError, match="set_image"):
        fast(sparse)
    with pytest.raises(ValueError, match="one embedding"):
        fast.set_image(torch.zeros(2, 32, 16, 16))
    with pytest.raises(ValueError, match="dtype"):
        FastDecoder(model, dtype=torch.float16)
    fast.set_image(torch.randn(1, 32, 16, 16))
    state = fast.tokens(sparse)
    assert len(state) == 2 and state.iou_pred.shape == (2, 4)
    all_masks = fast.masks(state)
    assert all_masks.shape == (2, 4, 64, 64)
    # a subset of prompts and tokens gives the same rows
    sub = fast.masks(state.select(torch.tensor([1])), torch.tensor([2, 3]))
    torch.testing.assert_close(sub, all_masks[1:, 2:])


def test_fast_decoder_exact_for_large_and_offset_keys(full_decoder_model):
    """The unrolled first convolution (scale * base + low-rank terms) does not lose precision
    when the image keys are large or carry a large per-pixel mean (the norms remove it)."""
    m = full_decoder_model
    pe, md = m.prompt_encoder, m.mask_decoder
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(1, 256, 64, 64, generator=g) * 40.0 + torch.randn(1, 1, 64, 64, generator=g) * 300.0
    coords, labels, _ = _prompts(m, 3, seed=2)
    fast = FastDecoder(m)
    fast.set_image(emb)
    with torch.no_grad():
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
        ref, ref_iou = md(emb, pe.get_dense_pe(), sparse, dense, True)
        got, got_iou = fast(sparse, multimask_output=True)
    assert float((got - ref).norm() / ref.norm()) < 1e-5
    torch.testing.assert_close(got_iou, ref_iou, atol=1e-4, rtol=1e-4)


def _decoder_and_points(model, n, seed):
    """A FastDecoder set on a random tiny embedding, and ``n`` point prompts' sparse embeddings."""
    fast = FastDecoder(model)
    fast.set_image(torch.randn(1, 32, 16, 16, generator=torch.Generator().manual_seed(seed)))
    coords, labels, _ = _prompts(model, n)
    with torch.no_grad():
        sparse, _ = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return fast, sparse


def test_fast_decoder_finishes_only_wanted_mask_tokens(model):
    fast, sparse = _decoder_and_points(model, 3, seed=6)
    full = fast.tokens(sparse)
    part = fast.tokens(sparse, mask_index=[1, 3])
    assert part.mask_index == (1, 3) and part.mask_tokens.shape[1] == 2
    torch.testing.assert_close(part.iou_pred, full.iou_pred)  # every IoU score, whatever is finished
    torch.testing.assert_close(fast.masks(part), fast.masks(full, [1, 3]))
    with pytest.raises(ValueError, match=r"mask tokens \[0\] were not finished.*mask_index"):
        fast.masks(part, [0, 1])
    with pytest.raises(ValueError, match="mask_index must name mask tokens in 0..3"):
        fast.tokens(sparse, mask_index=[4])
    # masks written into a caller's tensor; a wrong one is refused
    out = torch.full((3, 2, 64, 64), float("nan"))
    assert fast.masks(part, out=out) is out
    torch.testing.assert_close(out, fast.masks(full, [1, 3]))
    with pytest.raises(ValueError, match=r"out must be a contiguous float32 tensor of shape \(3, 2, 64, 64\)"):
        fast.masks(part, out=torch.empty(3, 2, 64, 64, dtype=torch.float64))


def test_fast_decoder_reuses_its_workspace_and_is_thread_safe(model):
    import threading

    fast, sparse = _decoder_and_points(model, 9, seed=7)
    expected = fast(sparse)
    buffers = {name: t.data_ptr() for name, t in fast._ws._flat.items()}
    assert {"keys0", "keys1", "kpe", "z", "u", "y"} <= set(buffers)
    fast(sparse)  # the same sizes again: no buffer is replaced
    assert {name: t.data_ptr() for name, t in fast._ws._flat.items()} == buffers
    # threads sharing one decoder: one holds the workspace, the others allocate their own
    results, errors = [None] * 4, []

    def work(k):
        try:
            for _ in range(3):
                results[k] = fast(sparse)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for logits, iou in results:
        torch.testing.assert_close(logits, expected[0])
        torch.testing.assert_close(iou, expected[1])


# --------------------------------------------------------------------------- same decoder behind both paths
RADII = (2.0, 5.0, 9.0)  # in low-res (256-frame) pixels x 4 = input pixels


def _disc_lowres(centres: torch.Tensor, low: int, scale: float) -> torch.Tensor:
    """(B, 2) XY in the model-input frame -> (B, 3, low, low) logits: discs of radius r (input
    pixels) around each point, logits = 4 (r - distance): stability scores from ~0.88 (r=2)
    to ~0.97 (r=9), so the stability filter keeps some and drops others."""
    yy, xx = torch.meshgrid(torch.arange(low, dtype=torch.float32), torch.arange(low, dtype=torch.float32), indexing="ij")
    out = []
    for x, y in centres.tolist():
        d = torch.sqrt((xx - (x / scale - 0.5)) ** 2 + (yy - (y / scale - 0.5)) ** 2) * scale
        out.append(torch.stack([(r * scale - d) * 4 for r in RADII]))
    return torch.stack(out)


def _disc_scores(centres: torch.Tensor, size: int) -> torch.Tensor:
    """Point-dependent predicted IoUs for the 3 masks: some pass 0.88, some do not."""
    u = (centres[:, 0] / size) * 0.3 + (centres[:, 1] / size) * 0.2
    return torch.stack([0.75 + u, 0.8 + u * 0.5, 0.95 - u * 0.4], dim=1)


def _install_disc_decoder(gen: SamAutomaticMaskGenerator) -> None:
    m = gen.predictor.model
    pe, md = m.prompt_encoder, m.mask_decoder
    low = pe.mask_input_size[0]
    size = m.img_size
    scale = size / low

    def fake_prompt_encoder(points, boxes, masks):
        coords, _ = points
        sparse = torch.zeros(coords.shape[0], 2, md.transformer_dim)
        sparse[:, 0, :2] = coords[:, 0, :]
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(coords.shape[0], -1, *pe.image_embedding_size)
        return sparse, dense

    def fake_decoder(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        c = sparse_prompt_embeddings[:, 0, :2]
        return _disc_lowres(c, low, scale), _disc_scores(c, size)

    def fake_tokens(sparse, dense=None, mask_index=None):
        c = sparse[:, 0, :2]
        iou = torch.cat([torch.zeros(len(c), 1), _disc_scores(c, size)], dim=1)
        n = len(c)  # the point rides in ``factors``; the other fields only need a batch dimension
        return TokenState(factors=c.clone(), right=torch.zeros(n), scale=torch.zeros(n), base=torch.zeros(1),
                          mask_tokens=torch.zeros(n, 4, 1), iou_pred=iou, mask_index=(0, 1, 2, 3))

    def fake_masks(state, token_index=None, out=None):
        discs = torch.cat([torch.zeros(len(state), 1, low, low), _disc_lowres(state.factors, low, scale)], dim=1)
        return discs if token_index is None else discs[:, torch.as_tensor(token_index)]

    pe.forward = fake_prompt_encoder
    md.forward = fake_decoder
    if isinstance(gen.decode, FastDecode):
        gen.decode.decoder.tokens = fake_tokens
        gen.decode.decoder.masks = fake_masks


@pytest.fixture
def disc_model():
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY["repvit"]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(points_per_side=6),
        dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_batch=7),
        dict(points_per_side=4, crop_n_layers=1, stability_score_thresh=0.5),
        dict(points_per_side=6, min_mask_region_area=30, box_nms_thresh=0.5, output_mode="coco_rle"),
    ],
)
def test_fast_pipeline_equals_reference_on_same_decoder(disc_model, kwargs):
    img = np.full((70, 90, 3), 100, np.uint8)
    recs = {}
    for impl in ("reference", "fast"):
        gen = SamAutomaticMaskGenerator(disc_model, impl=impl, **kwargs)
        _install_disc_decoder(gen)
        recs[impl] = gen.generate(img)
    ref, fast = recs["reference"], recs["fast"]
    assert len(ref) > 3
    assert len(fast) == len(ref)
    for a, b in zip(ref, fast):
        for k in ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"):
            assert a[k] == b[k], k
        if isinstance(a["segmentation"], np.ndarray):
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        else:
            assert a["segmentation"] == b["segmentation"]
    if kwargs.get("pred_iou_thresh", 0.88) > 0:  # the filter really removed some masks
        assert min(r["predicted_iou"] for r in ref) > 0.88


def test_fast_path_bounds_full_size_logits(disc_model, monkeypatch):
    """Full-size logits are made a few masks at a time, never for a whole batch."""
    monkeypatch.setattr(amg_decode, "FULLRES_CHUNK", 3)
    gen = SamAutomaticMaskGenerator(disc_model, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    _install_disc_decoder(gen)
    sizes = []
    post = gen.predictor.model.postprocess_masks

    def spy(masks, input_size, original_size):
        sizes.append(masks.shape[1])
        return post(masks, input_size, original_size)

    monkeypatch.setattr(gen.predictor.model, "postprocess_masks", spy)
    recs = gen.generate(np.full((70, 90, 3), 100, np.uint8))
    assert recs and max(sizes) <= 3 and sum(sizes) == 6 * 6 * 3


def test_coarse_to_fine_skips_covered_points(disc_model):
    img = np.full((70, 90, 3), 100, np.uint8)
    full = SamAutomaticMaskGenerator(disc_model, points_per_side=8)
    _install_disc_decoder(full)
    c2f = SamAutomaticMaskGenerator(disc_model, points_per_side=8, sampling="coarse-to-fine", coarse_points_per_side=3)
    _install_disc_decoder(c2f)
    decoded = []
    tokens = c2f.decode.decoder.tokens
    c2f.decode.decoder.tokens = lambda sparse, dense=None, mask_index=None: decoded.append(sparse[:, 0, :2].clone()) or tokens(sparse, dense, mask_index)
    ref, recs = full.generate(img), c2f.generate(img)
    pts = torch.cat(decoded)
    assert 9 < len(pts) < 9 + 64  # the coarse grid, then only the uncovered fine points
    # every fine point that was skipped lies inside a mask found from the coarse grid
    assert len(recs) > 0
    agreement = compare_records(ref, recs)
    assert agreement["n_reference"] == len(ref) and 0 <= agreement["recall"] <= 1


def test_end_to_end_random_weights_fast_equals_reference(model):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    kw = dict(points_per_side=6, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    ref = SamAutomaticMaskGenerator(model, impl="reference", **kw).generate(img)
    fast = SamAutomaticMaskGenerator(model, **kw).generate(img)
    assert len(ref) == len(fast) == 6 * 6 * 3  # nothing filtered: every mask of every point
    a = compare_records(ref, fast, min_iou=0.99)
    assert a["matched"] == len(ref)
    assert a["max_predicted_iou_diff"] < 1e-3 and a["max_stability_diff"] < 1e-3


def test_compare_records_known_answer():
    m1 = np.zeros((10, 10), bool)
    m1[:5] = True  # 50 px
    m2 = np.zeros((10, 10), bool)
    m2[:4] = True  # 40 px, IoU with m1 = 0.8
    empty = np.zeros((10, 10), bool)
    rec = lambda m, s: {"segmentation": m, "predicted_iou": s, "stability_score": 1.0}  # noqa: E731
    a = compare_records([rec(m1, 0.9), rec(empty, 0.5)], [rec(m2, 0.95), rec(empty, 0.5)])
    assert a["matched"] == 2 and a["min_iou"] == pytest.approx(0.8) and a["matched_iou_ge_0_99"] == 1
    assert a["max_predicted_iou_diff"] == pytest.approx(0.05)
    b = compare_records([rec(m1, 0.9)], [rec(m2, 0.9)], min_iou=0.9)
    assert b["matched"] == 0 and b["recall"] == 0.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(impl="gpu"), "impl must be one of"),
        (dict(precision="fp16"), "precision must be one of"),
        (dict(sampling="random"), "sampling must be one of"),
        (dict(impl="reference", precision="bf16"), "plain algorithm"),
        (dict(sampling="coarse-to-fine", points_per_side=None, point_grids=[np.array([[0.5, 0.5]])]), "refines a regular grid"),
        (dict(sampling="coarse-to-fine", coarse_points_per_side=64), "coarse_points_per_side must be <= 32"),
        (dict(coarse_points_per_side=4), "applies to sampling='coarse-to-fine'"),
        (dict(backend="tpu"), "unknown backend"),
    ],
)
def test_fast_options_errors(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamAutomaticMaskGenerator(model, **kwargs)


def test_empty_result_both_paths(model):
    """Random weights at default thresholds: nothing passes the filters -> [] from both paths."""
    img = np.random.default_rng(5).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for impl in ("reference", "fast"):
        gen = SamAutomaticMaskGenerator(model, points_per_side=4, impl=impl)
        assert gen.generate(img) == []
        # the filters are what emptied it: with them off, the same grid gives masks
        assert len(SamAutomaticMaskGenerator(model, points_per_side=4, impl=impl, pred_iou_thresh=-10.0, stability_score_thresh=0.0).generate(img)) > 0


@pytest.mark.parametrize("kwargs", [dict(impl="reference", points_per_batch=10), dict(), dict(sampling="coarse-to-fine", coarse_points_per_side=2)])
def test_progress_reports_every_grid_point_once(model, kwargs):
    seen = []
    gen = SamAutomaticMaskGenerator(model, points_per_side=5, crop_n_layers=1, **kwargs)
    gen.generate(np.full((40, 50, 3), 90, np.uint8), progress=lambda done, total: seen.append((done, total)))
    total = 25 * 5  # the whole image and 4 crops, 5 x 5 points each
    assert seen and all(t == total for _, t in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total and done[0] > 0
