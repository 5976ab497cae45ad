from __future__ import annotations

import pytest
import torch

import repvit_sam
from repvit_sam.config import resolve_name


def test_list_models_is_the_official_names():
    assert repvit_sam.list_models() == ["repvit", "vit_t", "vit_b", "vit_l", "vit_h"]


@pytest.mark.parametrize("alias,name", [("repvit_sam", "repvit"), ("mobile_sam", "vit_t"), ("MobileSAM", "vit_t"), ("default", "vit_h"), (" vit_b ", "vit_b")])
def test_aliases(alias, name):
    assert resolve_name(alias) == name


def test_tiny_variants_are_in_the_table_and_build_by_name(tmp_path):
    assert repvit_sam.list_models(include_tiny=True) == ["repvit", "vit_t", "vit_b", "vit_l", "vit_h", "tiny_repvit", "tiny_vit_t", "tiny_vit_b",
                                                             "tiny_repvit_wide", "tiny_vit_b_wide", "tiny_vit_b_deep"]
    m = repvit_sam.build_sam("tiny_repvit")
    assert m.image_encoder.img_size == 256
    assert m.image_encoder(torch.zeros(1, 3, 256, 256)).shape == (1, 32, 16, 16)
    torch.save(m.state_dict(), tmp_path / "t.pt")
    assert repvit_sam.registry.detect_variant(tmp_path / "t.pt") == "tiny_repvit"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown model 'vit_x'.*repvit, vit_b"):
        repvit_sam.build_sam("vit_x")


def test_sam_model_registry_is_segment_anything_style(tmp_path):
    reg = repvit_sam.sam_model_registry
    assert {"repvit", "vit_t", "vit_b", "vit_l", "vit_h", "default", "mobile_sam"} <= set(reg)
    m = repvit_sam.build_sam("vit_t")
    ckpt = tmp_path / "m.pt"
    torch.save(m.state_dict(), ckpt)
    loaded = reg["vit_t"](checkpoint=str(ckpt))
    assert isinstance(loaded, repvit_sam.Sam) and not loaded.training
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_build_on_device_and_buffers_not_in_state_dict():
    m = repvit_sam.build_sam("vit_t", device="cpu")
    assert m.device == torch.device("cpu")
    assert "pixel_mean" not in m.state_dict()
    assert torch.allclose(m.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
