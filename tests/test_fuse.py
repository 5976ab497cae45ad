"""fuse_model: the re-parameterised model computes the same function, with no BatchNorm left."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repvit_sam
from repvit_sam import build_from_config, fuse_model
from repvit_sam.modeling.common import Conv2d_BN
from repvit_sam.modeling.repvit import RepVGGDW

from conftest import TINY, randomize_


def _bn_count(m: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())


@pytest.mark.parametrize("groups,stride", [(1, 1), (8, 2), (1, 2)])
def test_conv2d_bn_fuse_is_exact(groups, stride):
    m = randomize_(Conv2d_BN(8, 16 if groups == 1 else 8, 3, stride, 1, groups=groups), seed=1)
    x = torch.randn(2, 8, 13, 11)
    fused = m.fuse()
    assert isinstance(fused, nn.Conv2d) and fused.bias is not None
    torch.testing.assert_close(fused(x), m(x), rtol=1e-5, atol=1e-5)


def test_repvggdw_fuse_is_exact():
    m = randomize_(RepVGGDW(12), seed=2)
    x = torch.randn(2, 12, 9, 10)
    fused = m.fuse()
    assert isinstance(fused, nn.Conv2d) and fused.groups == 12 and fused.kernel_size == (3, 3)
    torch.testing.assert_close(fused(x), m(x), rtol=1e-5, atol=1e-5)


def test_tiny_repvit_fuse_equivalence_and_no_bn():
    model = randomize_(build_from_config(TINY["repvit"]), seed=3)
    fused = fuse_model(model)
    assert _bn_count(model.image_encoder) > 0, "fuse_model must not modify its input by default"
    assert _bn_count(fused.image_encoder) == 0
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(fused.image_encoder(x), model.image_encoder(x), rtol=1e-4, atol=1e-5)


def test_full_repvit_fuse_equivalence():
    model = randomize_(repvit_sam.build_sam("repvit"), seed=4)
    # Keep activations in a sane range through 54 blocks: shrink the residual MLP branches.
    with torch.no_grad():
        for name, p in model.image_encoder.named_parameters():
            if "channel_mixer.m.2.bn.weight" in name:
                p.mul_(0.05)
    fused = fuse_model(model)
    assert _bn_count(fused.image_encoder) == 0
    n_convs_before = sum(isinstance(m, nn.Conv2d) for m in model.image_encoder.modules())
    n_convs_after = sum(isinstance(m, nn.Conv2d) for m in fused.image_encoder.modules())
    assert n_convs_after < n_convs_before  # RepVGGDW's two convs became one
    # fully convolutional: any multiple of 16 works; own generator: the input must not depend on test order
    x = torch.randn(1, 3, 320, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.image_encoder(x)
        out = fused.image_encoder(x)
    rel = (out - ref).norm() / ref.norm()
    assert rel < 1e-5, rel


def test_fuse_inplace_and_tinyvit():
    model = randomize_(build_from_config(TINY["vit_t"]), seed=5)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = model.image_encoder(x)
    same = fuse_model(model, inplace=True)
    assert same is model and _bn_count(model) == 0
    with torch.no_grad():
        torch.testing.assert_close(model.image_encoder(x), ref, rtol=1e-4, atol=1e-5)
