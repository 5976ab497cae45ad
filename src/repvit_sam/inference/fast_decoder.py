"""SAM's mask decoder, rearranged for many prompts on one image.

``FastDecoder`` computes the same function as ``model.mask_decoder`` (given the prompt
encoder's outputs) with about half the arithmetic per prompt and a cache-friendly layout:

* **Work that does not depend on the prompt is done once per image.** Without a mask prompt
  the dense embedding is the constant ``no_mask_embed``, so the first layer's image keys are
  the same for every prompt: their key/value projections (token -> image attention) and query
  projection (image -> token attention) are computed in ``set_image`` and shared.
* **Projections move to the 7 tokens instead of the 4096 pixels.** In token -> image attention
  on per-prompt keys ``K``, ``q_h . (W_k,h k + b) = (W_k,h^T q_h) . k + const`` (the constant
  cancels in the softmax) and ``softmax . (K W_v^T + b) = (softmax . K) W_v^T + b`` (rows sum
  to 1); in image -> token attention ``(k W_q^T + b_q) . t = k . (W_q^T t) + b_q . t`` and the
  output projection folds into the 7 token values (``A V W_o^T = A (V W_o^T)``). Each of these
  replaces a 4096 x 256 x 128 product by one of 4096 x 256 x (heads x tokens).
* **The upscaling runs as two matrix products in pixel-major layout** (a 2x2, stride-2
  transposed convolution is a per-pixel linear map followed by a pixel shuffle), and the
  hypernetwork product is taken before the shuffle, on 32 channels, so only the requested
  masks are rearranged.
* Work is split into the two stages ``tokens`` (transformer, IoU scores: cheap) and
  ``masks`` (upscaling: the larger half), so a caller can skip the masks of prompts it is going
  to discard anyway (the automatic mask generator drops masks whose predicted IoU is too low).

Results equal the reference up to float rounding (relative error ~1e-6 in fp32). With
``dtype=torch.bfloat16`` the decoder runs on a bfloat16 copy of its weights (matrix products
accumulate in fp32; softmax and normalisations compute internally in fp32), which is faster on
CPUs with AVX512-BF16 / AMX and halves the memory traffic; logits differ by ~1e-2 relative.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.sam import Sam


# Prompts per transformer pass and per upscaling pass. The large per-pass tensors are about
# 4 MiB per prompt in the transformer and 8 MiB per prompt in the upscaling (fp32); these sizes
# keep them under glibc's 32 MiB mmap threshold, below which freed blocks are reused, while
# larger ones are mapped, and page-faulted, afresh on every allocation (measured: 10-11 vs
# 17-19 ms per prompt for 4 vs 8 prompts per transformer pass).
TOKENS_PER_PASS = 4
MASKS_PER_PASS = 2


@dataclass
class TokenState:
    """The transformer's outputs for a batch of B prompts (``FastDecoder.tokens``)."""

    keys: torch.Tensor  # (B, HW, C) image keys after the transformer
    mask_tokens: torch.Tensor  # (B, num_mask_tokens, C)
    iou_pred: torch.Tensor  # (B, num_mask_tokens) predicted IoU of every mask token

    def select(self, idx: "torch.Tensor | slice") -> "TokenState":
        """The prompts ``idx`` (an index tensor, or a slice: then views, no copy)."""
        return TokenState(self.keys[idx], self.mask_tokens[idx], self.iou_pred[idx])

    def __len__(self) -> int:
        return int(self.keys.shape[0])


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, N, h*d) -> (B, N, h, d)."""
    return x.unflatten(-1, (h, x.shape[-1] // h))


def _split(weight: torch.Tensor, h: int) -> torch.Tensor:
    """A projection weight (h*d, C) -> (h, d, C)."""
    return weight.view(h, weight.shape[0] // h, weight.shape[1])


class FastDecoder:
    """Decode many prompts against one image embedding (see the module docstring).

    >>> dec = FastDecoder(model)
    >>> dec.set_image(embedding)                       # (1, 256, 64, 64)
    >>> sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    >>> logits, iou = dec(sparse, multimask_output=True)   # (B, 3, 256, 256), (B, 3)

    ``dense`` is only needed for mask prompts (pass ``dense`` from the prompt encoder); without
    it the shared first-layer work is used. The model's weights are read (at each ``set_image``),
    never modified; with ``dtype=torch.bfloat16`` the decoder runs on a bfloat16 copy of them
    taken at construction.
    """

    def __init__(self, model: Sam, dtype: torch.dtype = torch.float32) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.model = model
        self.dtype = dtype
        dec = model.mask_decoder
        if dtype != next(dec.parameters()).dtype:
            dec = copy.deepcopy(dec).to(dtype)
        self.decoder = dec
        self.transformer = dec.transformer
        self._shared: Optional[Tuple[torch.Tensor, ...]] = None
        up = dec.output_upscaling
        for m in (up[0], up[3]):
            if tuple(m.kernel_size) != (2, 2) or tuple(m.stride) != (2, 2):
                raise ValueError("FastDecoder expects SAM's 2x2 stride-2 transposed convolutions")
        self._ln, self._gelu, self._gelu2 = up[1], up[2], up[4]

    def _upscaling_matrices(self) -> None:
        """The transposed convolutions as matrices (read from the current weights):
        convT1 (C, Co, 2, 2) -> (C, 2*2*Co) ordered (a, b, o); convT2 (Co, C2, 2, 2) ->
        (Co, 2*2*C2) ordered (c, d, o2)."""
        up = self.decoder.output_upscaling
        ct1, ct2 = up[0], up[3]
        c, co = ct1.weight.shape[:2]
        self._w1 = ct1.weight.permute(0, 2, 3, 1).reshape(c, 4 * co).contiguous()
        self._b1 = ct1.bias.repeat(4)
        self._w2 = ct2.weight.permute(0, 2, 3, 1).reshape(co, 4 * ct2.weight.shape[1]).contiguous()
        self._b2 = ct2.bias.repeat(4)
        self._co, self._c2 = int(co), int(ct2.weight.shape[1])

    # ------------------------------------------------------------------ per image
    @torch.no_grad()
    def set_image(self, image_embedding: torch.Tensor) -> None:
        """Precompute the prompt-independent part for ``image_embedding`` (1, C, h, w)."""
        if image_embedding.ndim != 4 or image_embedding.shape[0] != 1:
            raise ValueError(f"set_image expects one embedding (1, C, h, w), got {tuple(image_embedding.shape)}")
        pe_module = self.model.prompt_encoder
        dt = self.dtype
        self._upscaling_matrices()
        self._embedding = image_embedding.flatten(2).transpose(1, 2).to(dt).contiguous()  # (1, HW, C)
        self._key_pe = pe_module.get_dense_pe().flatten(2).transpose(1, 2).to(dt).contiguous()  # (1, HW, C)
        self._hw = tuple(image_embedding.shape[-2:])
        keys = self._embedding + pe_module.no_mask_embed.weight.reshape(1, 1, -1).to(dt)
        layer = self.transformer.layers[0]
        kpe = keys + self._key_pe
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        h = t2i.num_heads
        k_t = _heads(t2i.k_proj(kpe), h)[0].permute(1, 2, 0).contiguous()  # (h, d, HW)
        v = _heads(t2i.v_proj(keys), h)[0].transpose(0, 1).contiguous()  # (h, HW, d)
        q_t = _heads(i2t.q_proj(kpe), i2t.num_heads)[0].permute(1, 2, 0).contiguous()  # (h, d, HW)
        self._shared = (keys, kpe, k_t, v, q_t)

    # ------------------------------------------------------------------ attention forms
    @staticmethod
    def _t2i(a: nn.Module, q: torch.Tensor, kpe: torch.Tensor, keys: torch.Tensor, shared: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Token -> image attention. ``shared``: the batch-independent projected keys (h, d, HW)
        and values (h, HW, d); else the projections move to the tokens (keys (B, HW, C))."""
        h = a.num_heads
        qh = _heads(a.q_proj(q), h)  # (B, N, h, d)
        b, n, _, d = qh.shape
        qh = qh * (1.0 / math.sqrt(d))
        if shared is not None:
            k_t, v = shared
            attn = torch.softmax(qh.transpose(1, 2) @ k_t, dim=-1)  # (B, h, N, HW)
            out = (attn @ v).transpose(1, 2)  # (B, N, h, d)
        else:
            qk = torch.einsum("bnhd,hdc->bhnc", qh, _split(a.k_proj.weight, h)).reshape(b, h * n, -1)
            attn = torch.softmax(qk @ kpe.transpose(1, 2), dim=-1)  # (B, h*N, HW); k bias cancels
            sk = (attn @ keys).view(b, h, n, -1)  # (B, h, N, C); rows of attn sum to 1
            out = torch.einsum("bhnc,hdc->bnhd", sk, _split(a.v_proj.weight, h)) + a.v_proj.bias.view(h, d)
        return a.out_proj(out.flatten(2))

    @staticmethod
    def _i2t(a: nn.Module, kpe: torch.Tensor, keys: torch.Tensor, tk: torch.Tensor, tv: torch.Tensor, q_t: Optional[torch.Tensor]) -> torch.Tensor:
        """``keys`` + image -> token attention (the residual is fused): pixels (B or 1, HW, C)
        query the tokens. ``q_t``: shared projected pixel queries (h, d, HW), or None (then the
        query projection moves to the tokens). The output projection and its bias fold into
        the token values. Returns (B, HW, C), before norm4."""
        h = a.num_heads
        kh = _heads(a.k_proj(tk), h)  # (B, N, h, d)
        vh = _heads(a.v_proj(tv), h)
        b, n, _, d = kh.shape
        kh = kh * (1.0 / math.sqrt(d))
        if q_t is not None:
            logits = kh.transpose(1, 2) @ q_t  # (B, h, N, HW)
        else:
            m = torch.einsum("bnhd,hdc->bhnc", kh, _split(a.q_proj.weight, h)).reshape(b, h * n, -1)  # (B, h*N, C)
            c0 = torch.einsum("bnhd,hd->bhn", kh, a.q_proj.bias.view(h, d)).reshape(b, h * n, 1)
            logits = torch.baddbmm(c0, m, kpe.transpose(1, 2)).view(b, h, n, -1)
        attn = torch.softmax(logits, dim=2).flatten(1, 2)  # over each head's N tokens: (B, h*N, HW)
        vo = torch.einsum("bnhd,ohd->bhno", vh, a.out_proj.weight.view(-1, h, d)).reshape(b, h * n, -1)
        vo = vo + a.out_proj.bias / h  # each pixel's attention weights sum to h over (head, token)
        return torch.baddbmm(keys, attn.transpose(1, 2), vo)

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def tokens(self, sparse: torch.Tensor, dense: Optional[torch.Tensor] = None) -> TokenState:
        """Run the two-way transformer and the IoU head for B prompts: sparse (B, N, C) prompt
        embeddings; dense (B, C, h, w) only for mask prompts (else the no-mask embedding)."""
        if self._shared is None:
            raise RuntimeError("FastDecoder.set_image(embedding) must be called before decoding")
        dec, tr = self.decoder, self.transformer
        b = sparse.shape[0]
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1), sparse.to(self.dtype)], dim=1)  # (B, T, C)
        key_pe = self._key_pe
        queries, query_pe = tokens, tokens
        shared = dense is None
        if shared:
            keys, kpe, k_t, v, q_t = self._shared
        else:
            keys = self._embedding + dense.flatten(2).transpose(1, 2).to(self.dtype)
            kpe = keys + key_pe
        for i, layer in enumerate(tr.layers):
            first = shared and i == 0
            queries = layer.token_self_attention(queries, query_pe)
            attn = self._t2i(layer.cross_attn_token_to_image, queries + query_pe, kpe, keys, (k_t, v) if first else None)
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(self._i2t(layer.cross_attn_image_to_token, kpe, keys, queries + query_pe, queries, q_t if first else None))
            kpe = keys + key_pe
        attn = self._t2i(tr.final_attn_token_to_image, queries + query_pe, kpe, keys, None)
        queries = tr.norm_final_attn(queries + attn)
        iou = dec.iou_prediction_head(queries[:, 0, :])
        return TokenState(keys, queries[:, 1 : 1 + dec.num_mask_tokens, :], iou.float())

    @torch.no_grad()
    def masks(self, state: TokenState, token_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Low-res mask logits (B, K, 4h, 4w) of mask tokens ``token_index`` (default: all)."""
        dec = self.decoder
        idx = list(range(dec.num_mask_tokens)) if token_index is None else [int(i) for i in token_index]
        b, hw, c = state.keys.shape
        h, w = self._hw
        co, c2 = self._co, self._c2
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](state.mask_tokens[:, i, :]) for i in idx], dim=2)  # (B, C2, K)
        x = torch.addmm(self._b1, state.keys.reshape(b * hw, c), self._w1).view(b * hw * 4, co)
        ln = self._ln
        x = self._gelu(F.layer_norm(x, (co,), ln.weight, ln.bias, ln.eps))
        x = self._gelu2(torch.addmm(self._b2, x, self._w2)).view(b, hw * 16, c2)  # (B, HW*16, C2)
        m = (x @ hyper).float()  # (B, HW*16, K)
        k = len(idx)
        # rows: pixel (i, j), convT1 offset (a, b), convT2 offset (c, d) -> output (4i+2a+c, 4j+2b+d)
        m = m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return m.reshape(b, k, 4 * h, 4 * w)

    def __call__(
        self, sparse: torch.Tensor, dense: Optional[torch.Tensor] = None, multimask_output: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(low-res logits (B, M, 4h, 4w), IoU predictions (B, M)); M = 3 if multimask else 1,
        as ``MaskDecoder.forward``. Large batches run ``pass_sizes`` prompts at a time."""
        sel = torch.arange(1, self.decoder.num_mask_tokens) if multimask_output else torch.tensor([0])
        logits, ious = [], []
        per_tokens, per_masks = self.pass_sizes
        for i in range(0, sparse.shape[0], per_tokens):
            state = self.tokens(sparse[i : i + per_tokens], None if dense is None else dense[i : i + per_tokens])
            for j in range(0, len(state), per_masks):
                logits.append(self.masks(state.select(slice(j, j + per_masks)), sel))
            ious.append(state.iou_pred[:, sel])
        return torch.cat(logits), torch.cat(ious)

    @property
    def pass_sizes(self) -> Tuple[int, int]:
        """Prompts per transformer pass and per upscaling pass: twice as many in bfloat16,
        whose tensors are half the size (see TOKENS_PER_PASS)."""
        k = 2 if self.dtype == torch.bfloat16 else 1
        return TOKENS_PER_PASS * k, MASKS_PER_PASS * k
