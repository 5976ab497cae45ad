"""Shared fixtures: tiny configs (fast on 2 cores) and random-weight models with BN statistics
randomised, so that fusion and loading are tested on non-trivial numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repvit_sam.config import VARIANTS

# The test-size variants of the variant table (256-pixel inputs, 16x16 embeddings): the same code
# paths as the real models, ~100x cheaper. Keyed by the official variant each one mirrors.
TINY = {name: VARIANTS[f"tiny_{name}"] for name in ("repvit", "vit_t", "vit_b")}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic a random value (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.5) + (1.0 if name.endswith("bn.weight") else 0.0))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(params=sorted(TINY))
def tiny_name(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(tiny_name):
    from repvit_sam import build_from_config

    torch.manual_seed(0)
    return randomize_(build_from_config(TINY[tiny_name]))


@pytest.fixture(scope="session")
def vit_t_checkpoint(tmp_path_factory):
    """A random-weights vit_t checkpoint in the official layout (a plain state_dict)."""
    from repvit_sam import build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_vit_t.pt"
    torch.save(build_sam("vit_t").state_dict(), path)
    return path


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny models run fastest so on a shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_cli(argv, capsys):
    """``repvit-sam ARGV`` in-process -> (exit status, stdout, stderr)."""
    from repvit_sam.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- trained tiny models (tests/data/trained)
# Made by `python -m repvit_sam.train.fixtures` on synthetic images (see models.json there): a
# tiny teacher fine-tuned from random weights and a tiny RepViT student distilled from it.
# Use them wherever a test needs masks that mean something.
TRAINED = __import__("pathlib").Path(__file__).parent / "data" / "trained"
# models.json: each file's variant, SHA-256, validation figures and the commands that made it
TRAINED_RECORD = __import__("json").loads((TRAINED / "models.json").read_text()) if (TRAINED / "models.json").is_file() else {"models": {}}
TEACHER_VARIANT = TRAINED_RECORD["models"].get("teacher.pt", {}).get("variant", "tiny_vit_b_wide")
STUDENT_VARIANT = TRAINED_RECORD["models"].get("student.pt", {}).get("variant", "tiny_repvit_wide")


def trained_model(fname: str):
    """A committed trained tiny model (``teacher.pt``, ``student_mse.pt``, ``student.pt``), eval mode."""
    from repvit_sam import build_sam

    return build_sam(TRAINED_RECORD["models"][fname]["variant"], checkpoint=TRAINED / fname).eval()


@pytest.fixture(scope="session")
def trained_teacher():
    """The trained tiny teacher (``TEACHER_VARIANT``), a loaded Sam in eval mode."""
    return trained_model("teacher.pt")


@pytest.fixture(scope="session")
def trained_student():
    """The trained tiny RepViT student (``STUDENT_VARIANT``, after both distillation phases), eval mode."""
    return trained_model("student.pt")


class PreparedEncoder(nn.Module):
    """A prepared backend (``backends.prepare_encoder``) as the image encoder of a Sam."""

    def __init__(self, encode, img_size: int) -> None:
        super().__init__()
        self.encode, self.img_size = encode, img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


def int8_calibrated_on_scenes(model, backend: str, cache_dir):
    """``model`` with its encoder on the int8 ``backend``, calibrated as a user calibrates on their
    own images: ``CALIBRATION_DEFAULT`` synthetic scenes (seeds 200, 201, ...; no test scores them)."""
    import numpy as np

    from repvit_sam.backends import prepare_encoder
    from repvit_sam.export.mobile import CALIBRATION_DEFAULT, calibration_inputs
    from repvit_sam.modeling.sam import Sam
    from repvit_sam.synthetic import make_scene

    scenes = [make_scene(np.random.default_rng(200 + i), 256, 256).image for i in range(CALIBRATION_DEFAULT)]
    calib = [c[0] for c in calibration_inputs(model, scenes, preprocess=False)]
    encode = prepare_encoder(model.image_encoder, backend, cache_dir=cache_dir, calibration=calib)
    return Sam(PreparedEncoder(encode, model.image_encoder.img_size), model.prompt_encoder, model.mask_decoder).eval()


def held_out_synthetic(out, count: int = 20):
    """Write the first ``count`` images of the fixtures' held-out synthetic set (seed 1, 256x256,
    never trained on) into ``out``: ``annotations.json`` (COCO, RLE), ``images/``, ``sa1b/``.
    Returns ``out``."""
    from repvit_sam.synthetic import write_images

    write_images(out, count=count, seed=1, size=(256, 256), quiet=True)
    return out


@pytest.fixture(scope="session")
def synthetic_held_out(tmp_path_factory):
    """The first 10 images of the held-out synthetic set (see :func:`held_out_synthetic`)."""
    return held_out_synthetic(tmp_path_factory.mktemp("held_out") / "synth", 10)
