"""Growing a trained ViT teacher into a deeper one (repvit_sam.train.grow): the grown model
computes the same function, its new blocks learn, and bad pairs or files get one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from repvit_sam.inference.predictor import SamPredictor
from repvit_sam.registry import build_sam
from repvit_sam.train.grow import ZEROED, GrowError, deepen_state_dict, main


def _random_wide(seed: int = 0):
    torch.manual_seed(seed)
    m = build_sam("tiny_vit_b_wide").eval()
    with torch.no_grad():  # non-zero everywhere, so that a dropped or misplaced tensor shows
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_grown_model_gives_the_same_embeddings_and_masks():
    wide = _random_wide()
    deep = build_sam("tiny_vit_b_deep").eval()
    deep.load_state_dict(deepen_state_dict(wide.state_dict(), "tiny_vit_b_wide", "tiny_vit_b_deep"), strict=True)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        a, b = wide.image_encoder(x), deep.image_encoder(x)
    assert a.abs().mean() > 0.01
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    image = (np.random.default_rng(0).random((200, 240, 3)) * 255).astype(np.uint8)
    outs = []
    for m in (wide, deep):
        p = SamPredictor(m, fast_decoder=False)
        p.set_image(image)
        outs.append(p.predict(point_coords=np.array([[100.0, 80.0]]), point_labels=np.array([1]), return_logits=True))
    np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-4)
    np.testing.assert_allclose(outs[1][1], outs[0][1], atol=1e-5)


def test_new_blocks_start_as_identity_and_get_gradients():
    wide = _random_wide(1)
    grown = deepen_state_dict(wide.state_dict(), "tiny_vit_b_wide", "tiny_vit_b_deep")
    for i in (1, 3, 5, 7):
        for name in ZEROED:
            assert not grown[f"image_encoder.blocks.{i}.{name}"].any()
        # the rest of each new block copies its source block (2i and 2i+1 come from block i)
        torch.testing.assert_close(grown[f"image_encoder.blocks.{i}.attn.qkv.weight"],
                                   wide.state_dict()[f"image_encoder.blocks.{i // 2}.attn.qkv.weight"])
    deep = build_sam("tiny_vit_b_deep")
    deep.load_state_dict(grown, strict=True)
    deep.image_encoder(torch.randn(1, 3, 256, 256)).square().mean().backward()
    for i in (1, 3, 5, 7):
        assert deep.image_encoder.blocks[i].attn.proj.weight.grad.abs().sum() > 0
        assert deep.image_encoder.blocks[i].mlp.lin2.weight.grad.abs().sum() > 0


def test_pairs_that_are_not_a_doubling_are_refused():
    state = build_sam("tiny_vit_b").state_dict()
    with pytest.raises(GrowError, match="differ only in depth; they differ in embed_dim 32 vs 64"):
        deepen_state_dict(state, "tiny_vit_b", "tiny_vit_b_deep")
    with pytest.raises(GrowError, match="two SAM ViT variants"):
        deepen_state_dict(state, "tiny_repvit_wide", "tiny_vit_b_deep")
    with pytest.raises(GrowError, match="twice tiny_vit_b_deep's depth"):
        deepen_state_dict(state, "tiny_vit_b_deep", "tiny_vit_b_wide")


def test_command_writes_a_loadable_checkpoint_and_refuses_a_wrong_one(tmp_path, capsys):
    src, dst = tmp_path / "wide.pt", tmp_path / "deep.pt"
    wide = _random_wide(2)
    torch.save(wide.state_dict(), src)
    assert main([str(src), str(dst), "--from", "tiny_vit_b_wide", "--to", "tiny_vit_b_deep"]) == 0
    deep = build_sam("tiny_vit_b_deep", checkpoint=dst)
    assert len(deep.image_encoder.blocks) == 8
    wrong = tmp_path / "repvit.pt"
    torch.save(build_sam("tiny_repvit_wide").state_dict(), wrong)
    with pytest.raises(SystemExit) as e:
        main([str(wrong), str(tmp_path / "out.pt"), "--from", "tiny_vit_b_wide", "--to", "tiny_vit_b_deep"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not a tiny_vit_b_wide checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "out.pt").exists()


def test_fixture_script_grows_the_teacher_before_its_last_stage(tmp_path, monkeypatch):
    """The fixtures' teacher loop (--teacher-only, smoke sizes) with `finetune` stood in for by a
    stub that writes seeded random weights of the requested variant: stage 5 is asked for
    tiny_vit_b_deep and starts from stage 4's weights grown into it, which compute what stage
    4's do."""
    from repvit_sam.train import fixtures as fx

    calls = []

    def fake_cli(argv):
        argv = [str(a) for a in argv]
        calls.append(argv)
        run = tmp_path / "w" / Path(argv[argv.index("-o") + 1]).name
        run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(len(calls))
        torch.save(build_sam(argv[argv.index("--model") + 1]).state_dict(), run / "model.pt")

    monkeypatch.setattr(fx, "_cli", fake_cli)
    monkeypatch.setattr(fx, "_synth", lambda out, count, seed: out.mkdir(parents=True, exist_ok=True))
    threads = torch.get_num_threads()
    try:
        assert fx.main(["--work", str(tmp_path / "w"), "--teacher-only", "--smoke"]) == 0
    finally:
        torch.set_num_threads(threads)  # the script pins one thread for the process
    assert (fx.TRAIN_COUNT, fx.VAL_COUNT) == (2000, 50)  # --smoke sizes stay in the run, not the module
    models = [c[c.index("--model") + 1] for c in calls]
    assert models == ["tiny_vit_b_wide"] * 4 + ["tiny_vit_b_deep"]
    inits = [c[c.index("--checkpoint") + 1] if "--checkpoint" in c else None for c in calls]
    assert inits[1:4] == [str(tmp_path / "w" / n / "model.pt") for n in ("teacher", "teacher_2", "teacher_3")]
    assert inits[0] is None and inits[4] == str(tmp_path / "w" / "teacher_5_grown.pt")
    stage4 = build_sam("tiny_vit_b_wide", checkpoint=tmp_path / "w" / "teacher_4" / "model.pt").eval()
    grown = build_sam("tiny_vit_b_deep", checkpoint=inits[4]).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(grown.image_encoder(x), stage4.image_encoder(x), rtol=0, atol=1e-6)
