"""Frozen descriptions of every model variant, and the one table that names them.

A config is pure data: the modules in :mod:`repvit_sam.modeling` are built from it and never
read global state. ``VARIANTS`` is the single source of truth for what ``build_sam`` can make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Tuple, Union


# SAM's input normalisation (ImageNet statistics on 0..255 RGB), shared by every variant.
PIXEL_MEAN: Tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: Tuple[float, float, float] = (58.395, 57.12, 57.375)


class RepViTBlockCfg(NamedTuple):
    """One RepViT block: 3x3 depthwise token mixer, 2x-expansion GELU channel MLP."""

    channels: int  # output channels; a change from the previous block makes it a downsample block
    use_se: bool
    stride: int


@dataclass(frozen=True)
class RepViTConfig:
    """RepViT trunk + SAM neck. ``blocks`` lists every block after the stem, in order."""

    blocks: Tuple[RepViTBlockCfg, ...]
    stem_channels: int = 80  # channels after the stem (its first conv has half of these)
    out_chans: int = 256
    img_size: int = 1024


@dataclass(frozen=True)
class TinyViTConfig:
    """TinyViT (MobileSAM). Stage 0 is convolutional (MBConv); the others are windowed attention."""

    embed_dims: Tuple[int, ...] = (64, 128, 160, 320)
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: Tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000  # the unused classification head kept in the official checkpoint
    out_chans: int = 256
    img_size: int = 1024


@dataclass(frozen=True)
class ViTConfig:
    """SAM's ViT image encoder (windowed attention + a few global blocks, relative positions)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: Tuple[int, ...]
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256
    img_size: int = 1024


EncoderConfig = Union[RepViTConfig, TinyViTConfig, ViTConfig]


@dataclass(frozen=True)
class PromptDecoderConfig:
    """SAM's prompt encoder and mask decoder; identical for every published variant."""

    embed_dim: int = 256
    image_embedding_size: int = 64
    mask_in_chans: int = 16
    transformer_depth: int = 2
    transformer_heads: int = 8
    transformer_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256


@dataclass(frozen=True)
class SamConfig:
    name: str
    encoder: EncoderConfig
    decoder: PromptDecoderConfig = field(default_factory=PromptDecoderConfig)
    pixel_mean: Tuple[float, float, float] = PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = PIXEL_STD
    description: str = ""
    tiny: bool = False  # a test-size variant (256-px input): no official checkpoint exists

    @property
    def img_size(self) -> int:
        return self.encoder.img_size


def _repvit_sam_blocks() -> Tuple[RepViTBlockCfg, ...]:
    """RepViT-M2.3 without its last two 640-channel blocks, third downsample at stride 1.

    Returns the 54 blocks ``features.1 ... features.54`` (MODEL.md's table). Within a stage,
    squeeze-excite sits on every other block starting with the first, but never on the last
    block before a downsample.
    """
    # (first index, last index, channels) of each run of stride-1 blocks
    stages = ((1, 7, 80), (9, 15, 160), (17, 51, 320), (53, 54, 640))
    downsamples = {8: (160, 2), 16: (320, 2), 52: (640, 1)}  # index -> (out channels, stride)
    blocks = []
    for index in range(1, 55):
        if index in downsamples:
            channels, stride = downsamples[index]
            blocks.append(RepViTBlockCfg(channels, False, stride))
            continue
        first, last, channels = next(s for s in stages if s[0] <= index <= s[1])
        use_se = (index - first) % 2 == 0 and index != last
        blocks.append(RepViTBlockCfg(channels, use_se, 1))
    return tuple(blocks)


REPVIT_SAM = RepViTConfig(blocks=_repvit_sam_blocks())

VARIANTS: dict[str, SamConfig] = {
    "repvit": SamConfig(
        "repvit", REPVIT_SAM, description="RepViT-SAM: RepViT-M2.3 encoder (Wang et al. 2023)"
    ),
    "vit_t": SamConfig("vit_t", TinyViTConfig(), description="MobileSAM: TinyViT-5M encoder"),
    "vit_b": SamConfig(
        "vit_b",
        ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
        description="SAM ViT-B",
    ),
    "vit_l": SamConfig(
        "vit_l",
        ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
        description="SAM ViT-L",
    ),
    "vit_h": SamConfig(
        "vit_h",
        ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
        description="SAM ViT-H",
    ),
}


def _tiny_repvit(c1: int, c2: int, c3: int, c4: int, out_chans: int) -> RepViTConfig:
    """A 7-block RepViT for 256-pixel inputs: widths c1 (stem and stage 1), c2, c3, c4; SE on
    blocks 1, 4 and 7; downsampling at blocks 3 and 5 (16 x 16 embeddings)."""
    blocks = ((c1, True, 1), (c1, False, 1), (c2, False, 2), (c2, True, 1), (c3, False, 2), (c4, False, 1), (c4, True, 1))
    return RepViTConfig(blocks=tuple(RepViTBlockCfg(*b) for b in blocks), stem_channels=c1, out_chans=out_chans, img_size=256)


# Test-size variants: the module types of the official ones, 256-pixel inputs, 16x16x32
# embeddings, about 100x cheaper. Tests, smoke runs and the models trained on synthetic data
# (tests/data) use them; every command accepts them by name.
TINY_DECODER = PromptDecoderConfig(
    embed_dim=32, image_embedding_size=16, mask_in_chans=8, transformer_heads=2,
    transformer_mlp_dim=64, iou_head_hidden_dim=32,
)

VARIANTS.update({
    "tiny_repvit": SamConfig(
        "tiny_repvit",
        _tiny_repvit(16, 32, 48, 64, out_chans=32),
        TINY_DECODER,
        description="test-size RepViT-SAM (256 px)",
        tiny=True,
    ),
    "tiny_vit_t": SamConfig(
        "tiny_vit_t",
        TinyViTConfig(
            embed_dims=(16, 32, 40, 48), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 2),
            window_sizes=(7, 7, 14, 7), num_classes=10, out_chans=32, img_size=256,
        ),
        TINY_DECODER,
        description="test-size MobileSAM (256 px)",
        tiny=True,
    ),
    "tiny_vit_b": SamConfig(
        "tiny_vit_b",
        ViTConfig(embed_dim=32, depth=3, num_heads=2, global_attn_indexes=(1,), window_size=6, out_chans=32, img_size=256),
        TINY_DECODER,
        description="test-size SAM ViT (256 px)",
        tiny=True,
    ),
})

# Wider test-size variants: 64-channel embeddings and a 64-wide decoder. The trained fixtures
# (tests/data/trained) use them: the 32-wide ones above stop near box mIoU 0.67 on the
# synthetic scenes, where these reach about 0.77 with the same recipe (docs/finetune.md).
TINY_WIDE_DECODER = PromptDecoderConfig(
    embed_dim=64, image_embedding_size=16, mask_in_chans=16, transformer_heads=2,
    transformer_mlp_dim=128, iou_head_hidden_dim=64,
)

VARIANTS.update({
    "tiny_repvit_wide": SamConfig(
        "tiny_repvit_wide",
        _tiny_repvit(24, 48, 64, 96, out_chans=64),
        TINY_WIDE_DECODER,
        description="test-size RepViT-SAM, 64-wide (256 px)",
        tiny=True,
    ),
    "tiny_vit_b_wide": SamConfig(
        "tiny_vit_b_wide",
        ViTConfig(embed_dim=64, depth=4, num_heads=4, global_attn_indexes=(1, 3), window_size=6, out_chans=64, img_size=256),
        TINY_WIDE_DECODER,
        description="test-size SAM ViT, 64-wide (256 px)",
        tiny=True,
    ),
    # tiny_vit_b_wide with each block followed by a second of its kind (8 blocks): the trained
    # teacher grows into it function-preservingly (repvit_sam.train.grow), see docs/finetune.md.
    "tiny_vit_b_deep": SamConfig(
        "tiny_vit_b_deep",
        ViTConfig(embed_dim=64, depth=8, num_heads=4, global_attn_indexes=(2, 3, 6, 7), window_size=6, out_chans=64, img_size=256),
        TINY_WIDE_DECODER,
        description="test-size SAM ViT, 64-wide, 8 blocks (256 px)",
        tiny=True,
    ),
})

# Friendly names users reach for; each resolves to an official registry name.
ALIASES: dict[str, str] = {
    "repvit_sam": "repvit",
    "repvit-sam": "repvit",
    "mobile_sam": "vit_t",
    "mobilesam": "vit_t",
    "mobile-sam": "vit_t",
    "sam_vit_b": "vit_b",
    "sam_vit_l": "vit_l",
    "sam_vit_h": "vit_h",
    "default": "vit_h",  # segment_anything's registry calls ViT-H "default"
}


def resolve_name(name: str) -> str:
    """Map an official name or alias to the official registry name, or raise a clear KeyError."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in VARIANTS:
        official = sorted(n for n, c in VARIANTS.items() if not c.tiny)
        tiny = sorted(n for n, c in VARIANTS.items() if c.tiny)
        known = f"{', '.join(official)}; test-size: {', '.join(tiny)}; aliases: {', '.join(sorted(ALIASES))}"
        raise KeyError(f"unknown model {name!r}; known models: {known}")
    return key
