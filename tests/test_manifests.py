"""Every variant's module tree matches the official checkpoint's key/shape/dtype table.

tests/data/manifests/*.json are copies of the published checkpoints' tables (facts about the
released files, kept as test data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import repvit_sam
from repvit_sam.registry import key_shapes

MANIFESTS = Path(__file__).parent / "data" / "manifests"


def load_manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", repvit_sam.list_models())
def test_state_dict_matches_official_manifest(name):
    manifest = load_manifest(name)
    sd = repvit_sam.build_sam(name).state_dict()
    assert set(sd) == set(manifest), (
        f"missing {sorted(set(manifest) - set(sd))[:5]}, unexpected {sorted(set(sd) - set(manifest))[:5]}"
    )
    for key, entry in manifest.items():
        assert list(sd[key].shape) == entry["shape"], key
        assert str(sd[key].dtype).removeprefix("torch.") == entry["dtype"], key


@pytest.mark.parametrize("name", repvit_sam.list_models())
def test_meta_key_table_equals_manifest(name):
    # The loader's cheap (meta-device) tables must agree with the real module tree.
    manifest = load_manifest(name)
    assert {k: list(v) for k, v in key_shapes(name).items()} == {k: e["shape"] for k, e in manifest.items()}


def test_repvit_encoder_size_matches_spec():
    enc = repvit_sam.build_sam("repvit").image_encoder
    n = sum(p.numel() for p in enc.parameters())
    assert 23.0e6 < n < 23.4e6  # MODEL.md: about 23.2 M parameters
    assert len(enc.features) == 55


@pytest.mark.parametrize("name", ["repvit", "vit_t"])
def test_full_size_encoder_output_shape(name):
    model = repvit_sam.build_sam(name)
    with torch.no_grad():
        out = model.image_encoder(torch.randn(1, 3, 1024, 1024))
    assert out.shape == (1, 256, 64, 64)
    assert torch.isfinite(out).all()
