"""FastDecoder computes MaskDecoder's function (logits and IoU scores), for the tiny decoders of
every tiny variant and for SAM's full-size decoder, with and without mask prompts; its stages,
workspace and thread safety.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from repvit_sam import build_from_config
from repvit_sam.config import PromptDecoderConfig
from repvit_sam.inference.fast_decoder import FastDecoder

from conftest import TINY, randomize_


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    """A random-weight model of each tiny variant (tiny_repvit, tiny_vit_t, tiny_vit_b)."""
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY[request.param]))


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
        md64 = copy.deepcopy(md).double()  # the exact function, to judge both fp32 results by
        ref64, _ = md64(emb.double(), pe.get_dense_pe().double(), sparse.double(), dense.double(), True)

    def err(x):
        return float((x.double() - ref64).norm() / ref64.norm())

    # here the reference's own fp32 error is ~3e-5: FastDecoder must be no less exact than it
    assert err(got) < max(1e-5, 1.5 * err(ref)), (err(got), err(ref))
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


@pytest.mark.parametrize("with_mask", [False, True])
def test_fast_decoder_many_token_prompts_match(full_decoder_model, with_mask):
    """Prompts of many points (SAM-PT's second pass: 41 points) take the plain per-prompt route
    (pixel-side projections, the convolution of the final keys) and still equal MaskDecoder."""
    m = full_decoder_model
    pe, md = m.prompt_encoder, m.mask_decoder
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(1, 256, 64, 64, generator=g)
    coords = torch.rand(3, 41, 2, generator=g) * m.img_size
    labels = (torch.arange(41) < 8).int().expand(3, 41)
    masks_in = torch.randn(3, 1, *pe.mask_input_size, generator=g) if with_mask else None
    fast = FastDecoder(m)
    fast.set_image(emb)
    with torch.no_grad():
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=masks_in)
        t2i = md.transformer.layers[0].cross_attn_token_to_image
        assert t2i.num_heads * (sparse.shape[1] + 4) > t2i.internal_dim  # the plain route is taken
        ref, ref_iou = md(emb, pe.get_dense_pe(), sparse, dense, False)
        got, got_iou = fast(sparse, dense if with_mask else None, multimask_output=False)
        state = fast.tokens(sparse, dense if with_mask else None, mask_index=[0])
        assert state.scale is None and state.factors.shape[1] == 257  # final keys and a row of ones
        staged = fast.masks(state.select(torch.tensor([2])))
    assert float((got - ref).norm() / ref.norm()) < 1e-5
    torch.testing.assert_close(got_iou, ref_iou, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(staged, got[2:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_points", [1, 41])
def test_fast_decoder_mask_input_low_rank_matches(model, full_decoder_model, n_points):
    """Mask prompts passed as ``mask_input`` use their low-rank form (SAM's mask path ends in a
    1x1 convolution of 16 channels: the shared first layer plus rank-17 terms) on SAM's decoder;
    the tiny decoders (8 channels against 32) fall back to the dense form. Both equal
    MaskDecoder, with one mask per prompt or one for all, through __call__ and the stages."""
    for m in (full_decoder_model, model):
        pe, md = m.prompt_encoder, m.mask_decoder
        g = torch.Generator().manual_seed(7)
        emb = torch.randn(1, md.transformer_dim, *pe.image_embedding_size, generator=g)
        coords = torch.rand(3, n_points, 2, generator=g) * m.img_size
        labels = (torch.arange(n_points) < max(1, n_points // 5)).int().expand(3, n_points)
        boxes = torch.sort(torch.rand(3, 2, 2, generator=g) * m.img_size, dim=1).values.flatten(1)
        fast = FastDecoder(m)
        fast.set_image(emb)
        assert (fast._mask_u is not None) == (m is full_decoder_model)
        for masks_in in (torch.randn(3, 1, *pe.mask_input_size, generator=g) * 4, torch.randn(1, 1, *pe.mask_input_size, generator=g)):
            with torch.no_grad():
                sparse, dense = pe(points=(coords, labels), boxes=boxes, masks=masks_in)
                for multimask in (True, False):
                    ref, ref_iou = md(emb, pe.get_dense_pe(), sparse, dense, multimask)
                    got, got_iou = fast(sparse, multimask_output=multimask, mask_input=masks_in)
                    assert float((got - ref).norm() / ref.norm()) < 1e-5
                    torch.testing.assert_close(got_iou, ref_iou, atol=1e-4, rtol=1e-4)
                staged = fast.masks(fast.tokens(sparse, mask_index=[0], mask_input=masks_in))
                assert float((staged - ref).norm() / ref.norm()) < 1e-5  # ref: the single-mask output
    with pytest.raises(ValueError, match="not both"):
        fast(sparse, dense, mask_input=masks_in)
    with pytest.raises(ValueError, match=r"mask_input must be \(3, 1, 64, 64\) low-res logits"):
        fast(sparse, mask_input=torch.zeros(2, 1, 64, 64))


def test_fast_decoder_mask_input_bf16_close(full_decoder_model):
    m = full_decoder_model
    pe, md = m.prompt_encoder, m.mask_decoder
    g = torch.Generator().manual_seed(8)
    emb = torch.randn(1, 256, 64, 64, generator=g)
    coords, labels, boxes = _prompts(m, 4, with_box=True, seed=3)
    masks_in = torch.randn(4, 1, 256, 256, generator=g) * 4
    with torch.no_grad():
        sparse, dense = pe(points=(coords, labels), boxes=boxes, masks=masks_in)
        ref, _ = md(emb, pe.get_dense_pe(), sparse, dense, False)
    fast = FastDecoder(m, dtype=torch.bfloat16)
    fast.set_image(emb)
    got, _ = fast(sparse, multimask_output=False, mask_input=masks_in)
    rel = float((got - ref).norm() / ref.norm())
    assert 1e-6 < rel < 0.05
    assert float(((got > 0) == (ref > 0)).float().mean()) > 0.97


def test_fast_decoder_follows_weights_changed_between_images():
    """The matrices and positional encoding derived from the weights are kept from image to
    image, and rebuilt when a weight changes (in place, or replaced by a loaded state)."""
    torch.manual_seed(0)
    m = randomize_(build_from_config(TINY["repvit"]))
    pe, md = m.prompt_encoder, m.mask_decoder
    emb = torch.randn(1, md.transformer_dim, *pe.image_embedding_size, generator=torch.Generator().manual_seed(3))
    coords, labels, boxes = _prompts(m, 3, with_box=True)
    fast = FastDecoder(m)

    def check():
        fast.set_image(emb)
        with torch.no_grad():
            sparse, dense = pe(points=(coords, labels), boxes=boxes, masks=None)
            ref, _ = md(emb, pe.get_dense_pe(), sparse, dense, True)
            got, _ = fast(sparse, None, multimask_output=True)
        assert float((got - ref).norm() / ref.norm()) < 1e-5
        return got

    first = check()
    assert float((check() - first).abs().max()) == 0.0  # same weights: same matrices, same logits
    with torch.no_grad():
        md.output_upscaling[0].weight.mul_(1.5)  # in place
        md.transformer.layers[-1].norm4.weight.add_(0.3)
        pe.pe_layer.positional_encoding_gaussian_matrix.mul_(2.0)  # a buffer: the dense positional encoding
    changed = check()
    assert float((changed - first).abs().max()) > 1e-3
    state = {k: v.clone() * 1.1 for k, v in m.state_dict().items()}
    m.load_state_dict(state)  # copied into the same tensors
    assert float((check() - changed).abs().max()) > 1e-3


def test_fast_decoder_rejects_an_embedding_of_another_size(model):
    fast = FastDecoder(model)
    c, (h, w) = model.mask_decoder.transformer_dim, model.prompt_encoder.image_embedding_size
    with pytest.raises(ValueError, match=rf"expects an embedding \(1, {c}, {h}, {w}\) for this model, got \(1, {c}, {h + 2}, {w}\)"):
        fast.set_image(torch.zeros(1, c, h + 2, w))
    with pytest.raises(ValueError, match="expects one embedding"):
        fast.set_image(torch.zeros(2, c, h, w))
