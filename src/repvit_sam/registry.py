"""Building models by name: ``build_sam``, ``list_models`` and segment_anything's dict registry."""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .config import ALIASES, VARIANTS, EncoderConfig, RepViTConfig, SamConfig, TinyViTConfig, ViTConfig, resolve_name
from .modeling.mask_decoder import MaskDecoder
from .modeling.prompt_encoder import PromptEncoder
from .modeling.repvit import RepViT
from .modeling.sam import Sam
from .modeling.tiny_vit import TinyViT
from .modeling.transformer import TwoWayTransformer
from .modeling.vit import ImageEncoderViT
from .weights import CheckpointError, PathLike, extract_state_dict, guess_variant, load_into, model_key_shapes, read_checkpoint

_ENCODERS: Dict[type, Callable[..., nn.Module]] = {
    RepViTConfig: RepViT,
    TinyViTConfig: TinyViT,
    ViTConfig: ImageEncoderViT,
}


def build_image_encoder(cfg: EncoderConfig) -> nn.Module:
    return _ENCODERS[type(cfg)](cfg)


def build_from_config(cfg: SamConfig) -> Sam:
    """A randomly initialised model (eval mode) for ``cfg``."""
    d = cfg.decoder
    emb = d.image_embedding_size
    model = Sam(
        image_encoder=build_image_encoder(cfg.encoder),
        prompt_encoder=PromptEncoder(d.embed_dim, (emb, emb), (cfg.img_size, cfg.img_size), d.mask_in_chans),
        mask_decoder=MaskDecoder(
            d.embed_dim,
            TwoWayTransformer(
                d.transformer_depth, d.embed_dim, d.transformer_heads, d.transformer_mlp_dim,
                attention_downsample_rate=d.attention_downsample_rate,
            ),
            num_multimask_outputs=d.num_multimask_outputs,
            iou_head_depth=d.iou_head_depth,
            iou_head_hidden_dim=d.iou_head_hidden_dim,
        ),
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
    )
    return model.eval()


@functools.lru_cache(maxsize=None)
def key_shapes(name: str) -> Mapping[str, Tuple[int, ...]]:
    """``{key: shape}`` of variant ``name``'s state_dict, computed without allocating weights."""
    with torch.device("meta"):
        model = build_from_config(VARIANTS[resolve_name(name)])
    return model_key_shapes(model)


def detect_variant(checkpoint: PathLike) -> str:
    """The official name of the variant whose key/shape table a checkpoint file matches exactly."""
    sd = extract_state_dict(read_checkpoint(checkpoint), source=str(checkpoint))
    best = guess_variant(sd, {n: key_shapes(n) for n in VARIANTS})
    if best is None or best[1] < 1.0:
        near = f" (closest: {best[0]!r}, {best[1]:.0%} of keys match)" if best else ""
        raise CheckpointError(f"{checkpoint} does not match any known model exactly{near}; name the model explicitly")
    return best[0]


def list_models(include_tiny: bool = False) -> List[str]:
    """Registry names in the order of the variant table: the official models, and with
    ``include_tiny`` also the test-size ones (``tiny_repvit``, ``tiny_vit_t``, ``tiny_vit_b``)."""
    return [name for name, cfg in VARIANTS.items() if include_tiny or not cfg.tiny]


def build_sam(
    name: str = "repvit",
    checkpoint: Optional[PathLike] = None,
    device: Optional[str | torch.device] = None,
) -> Sam:
    """Build model ``name`` (``repvit``, ``vit_t``, ``vit_b``, ``vit_l``, ``vit_h`` or an alias).

    With ``checkpoint`` (a path to an official file or any state_dict, possibly wrapped in
    ``{"model": ...}`` / ``{"state_dict": ...}`` or with ``module.`` prefixes) the weights are
    loaded strictly, read with ``weights_only=True``; without it the weights are random.
    Returns the model in eval mode on ``device`` (default CPU).
    """
    key = resolve_name(name)
    model = build_from_config(VARIANTS[key])
    if checkpoint is not None:
        source = str(checkpoint)
        sd = extract_state_dict(read_checkpoint(checkpoint), source=source)
        load_into(model, sd, variant=key, source=source, known_tables=((n, key_shapes(n)) for n in VARIANTS))
    if device is not None:
        model = model.to(device)
    return model.eval()


def _registry() -> Dict[str, Callable[..., Sam]]:
    reg: Dict[str, Callable[..., Sam]] = {n: functools.partial(build_sam, n) for n in VARIANTS}
    reg.update({alias: functools.partial(build_sam, target) for alias, target in ALIASES.items()})
    return reg


# segment_anything / official RepViT-SAM style: sam_model_registry["repvit"](checkpoint=PATH)
sam_model_registry: Dict[str, Callable[..., Sam]] = _registry()
