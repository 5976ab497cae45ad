"""Checkpoint loading: wrappers, prefixes, and clear errors that execute nothing."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

import repvit_sam
from repvit_sam import CheckpointError
from repvit_sam.weights import compare_keys, extract_state_dict


@pytest.fixture(scope="module")
def vit_t_state():
    torch.manual_seed(0)
    return repvit_sam.build_sam("vit_t").state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"state_dict": sd, "optimizer": {}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    ],
    ids=["plain", "model", "state_dict", "module.", "model+module._orig_mod."],
)
def test_wrappers_and_prefixes_load_exactly(tmp_path, vit_t_state, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(vit_t_state), path)
    model = repvit_sam.build_sam("mobile_sam", checkpoint=path)
    got = model.state_dict()
    for k, v in vit_t_state.items():
        assert torch.equal(got[k], v), k


def test_fp16_checkpoint_is_loaded_as_fp32(tmp_path, vit_t_state):
    path = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in vit_t_state.items()}, path)
    model = repvit_sam.build_sam("vit_t", checkpoint=path)
    w = model.state_dict()["mask_decoder.iou_token.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, vit_t_state["mask_decoder.iou_token.weight"].half().float())


def test_wrong_variant_names_keys_and_guesses_variant(tmp_path, vit_t_state):
    path = tmp_path / "mobile_sam.pt"
    torch.save(vit_t_state, path)
    with pytest.raises(CheckpointError) as e:
        repvit_sam.build_sam("repvit", checkpoint=path)
    msg = str(e.value)
    assert "does not fit model 'repvit'" in msg
    assert "missing (image_encoder.features.0.0.c.weight" in msg
    assert "unexpected (image_encoder.patch_embed.seq.0.c.weight" in msg
    assert "looks like a 'vit_t' checkpoint" in msg


def test_mis_shaped_keys_are_named_with_both_shapes(tmp_path, vit_t_state):
    sd = dict(vit_t_state)
    sd["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    del sd["mask_decoder.mask_tokens.weight"]
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        repvit_sam.build_sam("vit_t", checkpoint=path)
    msg = str(e.value)
    assert "1 missing (mask_decoder.mask_tokens.weight)" in msg
    assert "1 unexpected (extra.weight)" in msg
    assert "mask_decoder.iou_token.weight: file [1, 128] vs model [1, 256]" in msg


def test_compare_keys_counts():
    r = compare_keys({"a": torch.zeros(2), "b": torch.zeros(3), "x": torch.zeros(1)}, {"a": (2,), "b": (4,), "c": (1,)})
    assert (r.missing, r.unexpected, [m[0] for m in r.mismatched]) == (["c"], ["x"], ["b"])
    assert not r.ok


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        repvit_sam.build_sam("vit_t", checkpoint=path)


def test_truncated_archive_is_refused(tmp_path, vit_t_state):
    full = tmp_path / "full.pt"
    torch.save(vit_t_state, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or (damaged|corrupt)"):
        repvit_sam.build_sam("vit_t", checkpoint=cut)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipped", [False, True], ids=["legacy-pickle", "zip-archive"])
def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path, zipped):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": _Evil(str(marker))}
    if zipped:
        torch.save(payload, path)  # torch's zip format with a malicious data.pkl
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused to load .*nothing from it was executed"):
        repvit_sam.build_sam("vit_t", checkpoint=path)
    assert not marker.exists()


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        repvit_sam.build_sam("vit_t", checkpoint=tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        repvit_sam.build_sam("vit_t", checkpoint=tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        repvit_sam.build_sam("vit_t", checkpoint=tmp_path)


def test_dict_without_state_dict_is_refused():
    with pytest.raises(CheckpointError, match="keys are: 'epoch', 'lr'"):
        extract_state_dict({"epoch": 1, "lr": 0.1})
    with pytest.raises(CheckpointError, match="found list"):
        extract_state_dict([1, 2, 3])


def test_zip_without_torch_content_is_refused(tmp_path):
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        repvit_sam.build_sam("vit_t", checkpoint=path)
