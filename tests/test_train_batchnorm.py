"""Training batch norm (repvit_sam.train.batchnorm): the global-batch autograd function gives
BatchNorm2d's outputs and gradients, running statistics move once per step also under
activation checkpointing, and checkpointing leaves the gradients unchanged. (2 ranks x 2 images
== 1 rank x 4 images is tested end to end in tests/test_distill.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from repvit_sam import build_sam
from repvit_sam.train.batchnorm import _GlobalBatchNorm, checkpoint_blocks, convert_batchnorm


def test_global_function_matches_batch_norm_values_and_gradients(tmp_path):
    """One gloo rank: the all-reduces are identities, so the function must equal F.batch_norm."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        x = (torch.randn(3, 5, 7, 6) * 2 + 1).requires_grad_()
        w = (torch.rand(5) + 0.5).requires_grad_()
        b = torch.randn(5).requires_grad_()
        g = torch.randn(3, 5, 7, 6)
        stats: list = []
        y = _GlobalBatchNorm.apply(x, w, b, 1e-5, stats)
        grads = torch.autograd.grad((y * g).sum(), (x, w, b))
        x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
        y2 = F.batch_norm(x2, None, None, w2, b2, True, 0.0, 1e-5)
        grads2 = torch.autograd.grad((y2 * g).sum(), (x2, w2, b2))
        torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
        for a, e in zip(grads, grads2):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
        assert stats[2] == 3 * 7 * 6
        torch.testing.assert_close(stats[1], x.detach().var(dim=(0, 2, 3), unbiased=False))
    finally:
        dist.destroy_process_group()


def test_converted_model_keeps_keys_and_single_process_numbers():
    torch.manual_seed(0)
    enc = build_sam("tiny_repvit").image_encoder.train()
    ref = copy.deepcopy(enc)
    keys = list(enc.state_dict())
    _, n = convert_batchnorm(enc)
    assert n > 0 and list(enc.state_dict()) == keys
    assert not any(type(m) is nn.BatchNorm2d for m in enc.modules())
    x = torch.randn(2, 3, 256, 256)
    torch.testing.assert_close(enc(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.state_dict(), ref.state_dict())  # running statistics moved the same way


@pytest.mark.parametrize("name", ["tiny_repvit", "tiny_vit_b"])
def test_checkpointing_keeps_gradients_and_updates_statistics_once(name):
    torch.manual_seed(0)
    enc = build_sam(name).image_encoder.train()
    convert_batchnorm(enc)
    ck = copy.deepcopy(enc)
    assert checkpoint_blocks(ck) > 0
    x = torch.randn(2, 3, 256, 256)
    enc(x).square().mean().backward()
    ck(x).square().mean().backward()
    for (k, p), (_, q) in zip(enc.named_parameters(), ck.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=k)
    torch.testing.assert_close(enc.state_dict(), ck.state_dict())  # buffers: one update each, not two
