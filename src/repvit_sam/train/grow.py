"""Grow a trained SAM ViT encoder into a deeper one that computes the same function.

Each block ``i`` of the source encoder becomes blocks ``2i`` and ``2i + 1`` of the target:
``2i`` is the block itself, ``2i + 1`` a copy whose two residual branches end in zeros (the
attention's output projection and the MLP's second layer, weights and biases). A pre-norm ViT
block is ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, so the copy is the identity and
the grown model gives the source model's outputs; training then uses the extra depth (the
zeroed layers get gradients at once, the rest of the copy once they are non-zero). Both blocks
of a pair keep the source block's attention kind (windowed or global), so the target's
``global_attn_indexes`` are ``2g`` and ``2g + 1`` for each source global block ``g``.

    python -m repvit_sam.train.grow SRC.pt DST.pt --from tiny_vit_b_wide --to tiny_vit_b_deep
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..config import VARIANTS, SamConfig, ViTConfig, resolve_name

PREFIX = "image_encoder.blocks."
ZEROED = ("attn.proj.weight", "attn.proj.bias", "mlp.lin2.weight", "mlp.lin2.bias")


class GrowError(ValueError):
    """Two variants or a state_dict that cannot be grown one into the other."""


def get_config(name: str) -> SamConfig:
    return VARIANTS[resolve_name(name)]


def _check_pair(src: str, dst: str) -> None:
    a, b = get_config(src).encoder, get_config(dst).encoder
    if not isinstance(a, ViTConfig) or not isinstance(b, ViTConfig):
        raise GrowError(f"growing needs two SAM ViT variants; {src} -> {dst} is not (pick e.g. tiny_vit_b_wide -> tiny_vit_b_deep)")
    same = {f: (getattr(a, f), getattr(b, f)) for f in ("embed_dim", "num_heads", "patch_size", "window_size", "mlp_ratio",
                                                          "out_chans", "img_size")}
    differ = [f"{f} {x} vs {y}" for f, (x, y) in same.items() if x != y]
    if differ:
        raise GrowError(f"{src} and {dst} must differ only in depth; they differ in {', '.join(differ)}")
    if get_config(src).decoder != get_config(dst).decoder:
        raise GrowError(f"{src} and {dst} must have the same prompt encoder and mask decoder")
    want = tuple(sorted(j for g in a.global_attn_indexes for j in (2 * g, 2 * g + 1)))
    if b.depth != 2 * a.depth or tuple(sorted(b.global_attn_indexes)) != want:
        raise GrowError(f"{dst} must have twice {src}'s depth ({2 * a.depth}, has {b.depth}) and global blocks {list(want)} "
                        f"(has {list(b.global_attn_indexes)})")


def deepen_state_dict(state: Dict[str, torch.Tensor], src: str, dst: str) -> Dict[str, torch.Tensor]:
    """The ``dst`` state_dict that computes what ``state`` (a ``src`` one) computes; see the
    module's docstring. ``state`` is not modified."""
    _check_pair(src, dst)
    depth = get_config(src).encoder.depth
    block = re.compile(re.escape(PREFIX) + r"(\d+)\.(.+)$")
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = block.match(key)
        if m is None:
            out[key] = value.clone()
            continue
        i, rest = int(m.group(1)), m.group(2)
        if i >= depth:
            raise GrowError(f"{key}: the checkpoint has more blocks than {src}'s {depth}; is it a {src} checkpoint?")
        out[f"{PREFIX}{2 * i}.{rest}"] = value.clone()
        out[f"{PREFIX}{2 * i + 1}.{rest}"] = torch.zeros_like(value) if rest in ZEROED else value.clone()
    return out


def grow_checkpoint(src_path: Path, dst_path: Path, src: str, dst: str) -> None:
    """Read the ``src`` checkpoint at ``src_path`` (``weights_only``, unwrapped as ``build_sam``
    unwraps; it must fit ``src`` exactly), grow it and write the ``dst`` checkpoint atomically at
    ``dst_path``."""
    from ..registry import key_shapes
    from ..utils import atomic_write
    from ..weights import CheckpointError, check_fits, extract_state_dict, read_checkpoint

    source = str(src_path)
    state = extract_state_dict(read_checkpoint(src_path), source=source)
    try:
        check_fits(state, key_shapes(src), variant=resolve_name(src), source=source,
                   known_tables=((n, key_shapes(n)) for n in VARIANTS))
    except CheckpointError as e:
        raise GrowError(f"{src_path} is not a {src} checkpoint: {e}") from None
    grown = deepen_state_dict(state, src, dst)
    check_fits(grown, key_shapes(dst), variant=resolve_name(dst), source="the grown state_dict")  # every key and shape of the target
    with atomic_write(dst_path) as f:
        torch.save(grown, f)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repvit_sam.train.grow", description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="the trained checkpoint (official format)")
    p.add_argument("target", type=Path, help="where the grown checkpoint goes")
    p.add_argument("--from", dest="src", required=True, help="the source's variant, e.g. tiny_vit_b_wide")
    p.add_argument("--to", dest="dst", required=True, help="the target's variant, e.g. tiny_vit_b_deep")
    args = p.parse_args(argv)
    if not args.source.is_file():
        p.error(f"checkpoint not found: {args.source}")
    from ..weights import CheckpointError

    try:
        grow_checkpoint(args.source, args.target, args.src, args.dst)
    except (GrowError, CheckpointError, KeyError) as e:
        p.error(str(e).strip("'\""))
    print(f"wrote {args.target} ({args.dst}, grown from {args.source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
