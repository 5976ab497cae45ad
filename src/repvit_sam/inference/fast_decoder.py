"""SAM's mask decoder, rearranged for many prompts on one image.

``FastDecoder`` computes the same function as ``model.mask_decoder`` (given the prompt
encoder's outputs) with about a third of the arithmetic per prompt, and without allocating
fresh memory for its large intermediates:

* **Work that does not depend on the prompt is done once per image.** Without a mask prompt
  the dense embedding is the constant ``no_mask_embed``, so the first layer's image keys are
  the same for every prompt: their key/value projections (token -> image attention) and query
  projection (image -> token attention) are computed in ``set_image`` and shared. Their
  positional-encoding and no-mask terms depend only on the weights, so they are kept with the
  other weight-derived matrices and ``set_image`` is one product each on the embedding.
* **Projections move to the 7 tokens instead of the 4096 pixels.** In token -> image attention
  on per-prompt keys ``K``, ``q_h . (W_k,h k + b) = (W_k,h^T q_h) . k + const`` (the constant
  cancels in the softmax) and ``softmax . (K W_v^T + b) = (softmax . K) W_v^T + b`` (rows sum
  to 1); in image -> token attention ``(k W_q^T + b_q) . t = k . (W_q^T t) + b_q . t`` and the
  output projection folds into the 7 token values (``A V W_o^T = A (V W_o^T)``). Each of these
  replaces a 4096 x 256 x 128 product by one of 4096 x 256 x (heads x tokens).
* **The first transposed convolution is a low-rank update of a per-image product.** Each
  two-way layer updates the image keys by ``x_l = keys_{l-1} + A_l^T V_l`` (attention weights
  ``A_l``: heads x tokens rows, values ``V_l``) and normalises them,
  ``keys_l = r_l * (x_l C) diag(g_l) + b_l`` (``C`` removes the channel mean, ``r_l`` is the
  per-pixel reciprocal standard deviation). Any linear map of the final keys therefore
  unrolls into the same map of the first layer's keys (shared by all prompts, computed once
  per image) scaled per pixel, plus products of the narrow ``A_l`` (112 rows) with small
  matrices. The 4096 x 256 x 256 convolution product per prompt becomes one of
  4096 x 114 x 256, and the final keys need not be kept (``TokenState`` holds the factors).
* **The upscaling runs as two matrix products in pixel-major layout** (a 2x2, stride-2
  transposed convolution is a per-pixel linear map followed by a pixel shuffle), and the
  hypernetwork product is taken before the shuffle, on 32 channels, so only the requested
  masks are rearranged. The upscaling's LayerNorm writes its rows in output-row order, so the
  shuffle is a copy of contiguous runs.
* **The final attention runs only for the tokens that are read**: the IoU token and the
  requested mask tokens (its queries do not interact; the prompt tokens' outputs are unused).
* **Large intermediates live in reused buffers** (a workspace per decoder, used by one thread
  at a time; a concurrent call allocates its own), and so do ``set_image``'s per-image tensors
  (kept from image to image). Freshly allocated blocks of many MiB are page-faulted in on every
  use, which cost more than the arithmetic of some steps here.
* **A mask prompt is a rank-17 change of the shared first keys.** SAM's mask path ends in a
  1x1 convolution from 16 channels, so a mask prompt's dense embedding is ``W_d F + b_d`` per
  pixel, and its first keys are the no-mask keys plus ``G U`` (``G = [F, 1]``, 17 columns per
  pixel; ``U = [W_d^T; b_d - no_mask]``). The shared first-layer projections and the unrolled
  convolution therefore still apply, each plus a product with the 17 columns of ``G``, instead
  of a 4096 x 256 x 256 product per prompt (pass the logits as ``mask_input``; a ``dense``
  embedding from the prompt encoder takes the general route).
* **Prompts with many tokens take the plain route.** The two rearrangements above pay while a
  prompt has few tokens: with T tokens and h heads, a token-side product costs 4096 x 256 x hT
  against the pixel-side projection's 4096 x 256 x 128 (SAM: h = 8, so T < 16), and the
  unrolled convolution has rank about 2hT against the keys' 256 channels. A prompt of many
  points (SAM-PT's second pass: 8 positives, 1 negative and the other objects' points, about
  46 tokens) would cost about three times the plain decoder's arithmetic, so above that size
  the per-prompt layers project the pixels as ``MaskDecoder`` does and the first convolution
  is applied to the final keys themselves (the shared first layer is still used when there is
  no mask prompt).
* Work is split into the two stages ``tokens`` (transformer, IoU scores: cheap) and
  ``masks`` (upscaling: the larger half), so a caller can skip the masks of prompts it is going
  to discard anyway (the automatic mask generator drops masks whose predicted IoU is too low).

Results equal the reference up to float rounding (relative error ~1e-6 in fp32). With
``dtype=torch.bfloat16`` the decoder runs on a bfloat16 copy of its weights (matrix products
accumulate in fp32; softmax and normalisations compute internally in fp32), which is faster on
CPUs with AVX512-BF16 / AMX and halves the memory traffic; logits differ by ~1e-2 relative.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..modeling.sam import Sam


# Prompts per transformer pass and per upscaling pass (twice as many in bfloat16, whose tensors
# are half the size). The reused buffers take about 16 MiB per prompt in the transformer and
# 10 MiB per prompt in the upscaling (fp32): these sizes keep the working set near the
# last-level cache while passes stay large enough for efficient matrix products (measured on a
# 2-core AVX-512 CPU: 8 / 4 prompts per pass in bf16 beat 4 / 2, 16 / 4 and 16 / 8).
TOKENS_PER_PASS = 4
MASKS_PER_PASS = 2

Buffers = Callable[[str, Sequence[int], torch.dtype], torch.Tensor]


@dataclass
class TokenState:
    """The transformer's outputs for a batch of B prompts (``FastDecoder.tokens``).

    The final image keys are kept as what the first transposed convolution makes of them:
    ``scale * base + factors^T @ right`` (see the module docstring)."""

    factors: torch.Tensor  # (B, R, HW): per-pixel weights of the low-rank terms
    right: torch.Tensor  # (B, R, 4 * C1): their rows in the convolution's output space
    scale: Optional[torch.Tensor]  # (B, HW, 1): per-pixel scale of ``base`` (None: no base term)
    base: Optional[torch.Tensor]  # (1 or B, HW, 4 * C1): first-layer keys through the convolution
    mask_tokens: torch.Tensor  # (B, len(mask_index), C): the finished mask tokens
    iou_pred: torch.Tensor  # (B, num_mask_tokens) predicted IoU of every mask token
    mask_index: Tuple[int, ...]  # which mask tokens ``mask_tokens`` holds

    def select(self, idx: "torch.Tensor | slice") -> "TokenState":
        """The prompts ``idx`` (an index tensor, or a slice: then views, no copy)."""
        base = self.base if self.base is None or self.base.shape[0] == 1 else self.base[idx]
        scale = None if self.scale is None else self.scale[idx]
        return TokenState(self.factors[idx], self.right[idx], scale, base, self.mask_tokens[idx],
                          self.iou_pred[idx], self.mask_index)

    def __len__(self) -> int:
        return int(self.iou_pred.shape[0])

    @property
    def device(self) -> torch.device:
        return self.iou_pred.device


class _Workspace:
    """Named buffers reused from call to call, for one thread at a time: ``claim()`` yields a
    buffer getter; while another thread holds the workspace it yields one that allocates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flat: Dict[str, torch.Tensor] = {}

    def _get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n = math.prod(shape)
        buf = self._flat.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self._flat[name] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)

    @contextlib.contextmanager
    def claim(self, device: torch.device) -> Iterator[Buffers]:
        if self._lock.acquire(blocking=False):
            try:
                yield lambda name, shape, dtype: self._get(name, shape, dtype, device)
            finally:
                self._lock.release()
        else:
            yield lambda name, shape, dtype: torch.empty(tuple(shape), dtype=dtype, device=device)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, N, h*d) -> (B, N, h, d)."""
    return x.unflatten(-1, (h, x.shape[-1] // h))


def _split(weight: torch.Tensor, h: int) -> torch.Tensor:
    """A projection weight (h*d, C) -> (h, d, C)."""
    return weight.view(h, weight.shape[0] // h, weight.shape[1])


def _attention(a: nn.Module, q: Optional[torch.Tensor], k: torch.Tensor, v: torch.Tensor,
               q_proj: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a(q, k, v)`` (SAM's Attention) through PyTorch's fused attention kernel, which neither
    materialises nor rescales the (B, h, Nq, Nk) weights; ``q`` may have batch 1. ``q_proj``:
    ``a.q_proj(q)`` already computed (then ``q`` is not read)."""
    h = a.num_heads
    qh = _heads(a.q_proj(q) if q_proj is None else q_proj, h).transpose(1, 2)  # (B, h, Nq, d)
    kh = _heads(a.k_proj(k), h).transpose(1, 2)
    vh = _heads(a.v_proj(v), h).transpose(1, 2)
    if qh.shape[0] != kh.shape[0]:
        qh = qh.expand(kh.shape[0], -1, -1, -1)
    out = nn.functional.scaled_dot_product_attention(qh, kh, vh)  # (B, h, Nq, d)
    return a.out_proj(out.transpose(1, 2).flatten(2))


def sparse_embeddings(
    prompt_encoder: nn.Module, points: Optional[Tuple[torch.Tensor, torch.Tensor]], boxes: Optional[torch.Tensor],
    mask_input: Optional[torch.Tensor],
) -> torch.Tensor:
    """The prompt encoder's sparse embeddings for :class:`FastDecoder`, which embeds a mask prompt
    itself (``mask_input``): the mask is passed to the prompt encoder, whose dense embedding is
    then discarded, only to size a prompt that has neither points nor a box."""
    masks = mask_input if points is None and boxes is None else None
    return prompt_encoder(points=points, boxes=boxes, masks=masks)[0]


def _add_low_rank(logits: torch.Tensor, coef: torch.Tensor, g: torch.Tensor, b: int) -> None:
    """``logits[h, (j, i)] += coef[h, (j, i)] @ g[j]^T`` in place, for logits (h, B*N, HW), coef
    (h, B*N, r) and the per-prompt columns g (B, HW, r): one batched product per head (a
    broadcast over heads would copy ``g`` once per head)."""
    h, bn, hw = logits.shape
    g_t = g.transpose(1, 2)  # (B, r, HW), a view
    for i in range(h):
        logits[i].view(b, bn // b, hw).baddbmm_(coef[i].view(b, bn // b, -1), g_t)


def _softmax(x: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._softmax.out(x, dim, False, out=out)


class FastDecoder:
    """Decode many prompts against one image embedding (see the module docstring).

    >>> dec = FastDecoder(model)
    >>> dec.set_image(embedding)                       # (1, 256, 64, 64)
    >>> sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    >>> logits, iou = dec(sparse, multimask_output=True)   # (B, 3, 256, 256), (B, 3)

    Mask prompts: pass their low-res logits as ``mask_input`` (B or 1, 1, 4h, 4w) (or the
    prompt encoder's ``dense``, which takes the slower general route); without either the
    no-mask embedding is used. The model's weights are read, never modified: the matrices
    derived from them are kept between images and rebuilt at ``set_image`` when a weight has
    changed (in place or replaced); with ``dtype=torch.bfloat16`` the decoder runs on a bfloat16
    copy of them taken at construction. Decoding is safe from several threads; ``set_image``
    must not run while another thread decodes with the same decoder.
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
        self._weights_seen: Optional[Tuple[Tuple[int, int], ...]] = None
        self._image_ws = _Workspace()  # set_image's buffers (see there)
        up = dec.output_upscaling
        for m in (up[0], up[3]):
            if tuple(m.kernel_size) != (2, 2) or tuple(m.stride) != (2, 2):
                raise ValueError("FastDecoder expects SAM's 2x2 stride-2 transposed convolutions")
        self._ln = up[1]
        for g in (up[2], up[4]):  # applied in place as aten.gelu_ in ``masks``
            if not isinstance(g, nn.GELU) or g.approximate != "none":
                raise ValueError("FastDecoder expects SAM's exact GELU activations in the upscaling")
        self._ws = _Workspace()

    # ------------------------------------------------------------------ per image
    def _weights_key(self) -> Tuple[Tuple[int, int], ...]:
        """Identifies the weights ``set_image`` derives its matrices from (storage and in-place
        version of every prompt-encoder and decoder tensor): they are rebuilt when it changes."""
        tensors = [*self.model.prompt_encoder.parameters(), *self.model.prompt_encoder.buffers(), *self.decoder.parameters()]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def _upscaling_matrices(self) -> None:
        """The transposed convolutions as matrices, and the first one unrolled through the
        transformer's key normalisations (see the module docstring), from the current weights.

        convT1 (C, C1, 2, 2) -> W1 (C, 2*2*C1) ordered (a, b, o); convT2 (C1, C2, 2, 2) ->
        (C1, 2*2*C2) ordered (c, d, o2). With N_L = W1 and, layer by layer from the last,
        M_l = C diag(g_l) N_l and N_{l-1} = M_l: the map of the first keys is M_1, the rows of
        the layers' values are V_l M_l, and the norm biases add b_l N_l (b_L W1 + conv bias)."""
        up = self.decoder.output_upscaling
        ct1, ct2 = up[0], up[3]
        c, co = ct1.weight.shape[:2]
        c2 = ct2.weight.shape[1]
        dt = self.dtype
        w1 = ct1.weight.float().permute(0, 2, 3, 1).reshape(c, 4 * co)
        n = w1
        self._m: List[torch.Tensor] = []  # M_l, first layer first
        consts: List[torch.Tensor] = []  # b_l N_l, first layer first; the last one adds the conv bias
        conv_bias = ct1.bias.float().repeat(4)
        # the plain convolution, for the final keys of many-token prompts: rows W1, then the bias
        self._w1b = torch.cat([w1, conv_bias[None]]).to(dt)  # (C + 1, 4*C1)
        for layer in reversed(self.transformer.layers):
            norm = layer.norm4
            consts.insert(0, norm.bias.float() @ n + (conv_bias if not consts else 0.0))
            gn = norm.weight.float()[:, None] * n
            m = gn - gn.mean(dim=0, keepdim=True)
            self._m.insert(0, m)
            n = m
        # rows in factor order: layer 1..L-1 norm biases (scaled by s_{l+1}), then the last (x 1)
        self._consts = torch.stack(consts).to(dt)  # (L, 4*C1)
        self._m = [m.to(dt) for m in self._m]
        w2 = ct2.weight.permute(0, 2, 3, 1).reshape(co, 2, 2 * c2)  # columns (c, (d, o2))
        self._w2s = [w2[:, c].contiguous() for c in range(2)]  # per convT2 row offset c
        self._b2s = [ct2.bias.repeat(2)] * 2
        self._co, self._c2 = int(co), int(c2)

    def _first_layer_constants(self) -> None:
        """The prompt-independent terms of the first layer's shared projections, from the
        current weights: the first keys are ``E + n`` (embedding ``E``, no-mask embedding ``n``)
        and the keys the attention compares are ``E + n + P`` (positional encoding ``P``), so
        ``W (E + n + P)^T + b = W E^T + [W (n + P)^T + b]`` and likewise for the values and the
        unrolled convolution: ``set_image`` is then one product each, on ``E`` as it is."""
        dt = self.dtype
        pe_module = self.model.prompt_encoder
        no_mask = pe_module.no_mask_embed.weight.reshape(1, -1).float()  # (1, C)
        pos = pe_module.get_dense_pe().flatten(2)[0].t().float() + no_mask  # (HW, C): n + P
        layer = self.transformer.layers[0]
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        self._k_const = torch.addmm(t2i.k_proj.bias.float()[:, None], t2i.k_proj.weight.float(), pos.t()).to(dt)  # (h*d, HW)
        self._q_const = torch.addmm(i2t.q_proj.bias.float()[:, None], i2t.q_proj.weight.float(), pos.t()).to(dt)
        self._v_const = torch.addmm(t2i.v_proj.bias.float()[None], no_mask, t2i.v_proj.weight.float().t()).to(dt)  # (1, h*d)
        self._m0_32 = self._m[0].float()
        self._base_const = no_mask @ self._m0_32  # (1, 4*C1), fp32

    @torch.no_grad()
    def set_image(self, image_embedding: torch.Tensor) -> None:
        """Precompute the prompt-independent part for ``image_embedding`` (1, C, h, w)."""
        if image_embedding.ndim != 4 or image_embedding.shape[0] != 1:
            raise ValueError(f"set_image expects one embedding (1, C, h, w), got {tuple(image_embedding.shape)}")
        pe_module = self.model.prompt_encoder
        dt = self.dtype
        hw_shape = tuple(image_embedding.shape[-2:])
        expected = tuple(pe_module.image_embedding_size)
        if hw_shape != expected or image_embedding.shape[1] != self.decoder.transformer_dim:
            raise ValueError(f"set_image expects an embedding (1, {self.decoder.transformer_dim}, {expected[0]}, "
                             f"{expected[1]}) for this model, got {tuple(image_embedding.shape)}")
        self._hw = hw_shape
        key = self._weights_key()
        if key != self._weights_seen:  # matrices and positional encoding from the current weights
            self._upscaling_matrices()
            self._key_pe = pe_module.get_dense_pe().flatten(2).transpose(1, 2).to(dt).contiguous()  # (1, HW, C)
            self._mask_matrices()
            self._first_layer_constants()
            self._weights_seen = key
        # The per-image tensors below live in buffers kept from image to image (fresh blocks of
        # MiBs are page-faulted in at every use); ``base`` is new each time (a TokenState keeps it).
        buf: Buffers = lambda name, shape, dtype: self._image_ws._get(name, shape, dtype, image_embedding.device)  # noqa: E731
        hw, c = math.prod(self._hw), image_embedding.shape[1]
        e = image_embedding[0].flatten(1)  # (C, HW), a view
        self._embedding = buf("embedding", (1, hw, c), dt)
        self._embedding[0].copy_(e.t())  # the one transposed copy
        emb = self._embedding[0]  # (HW, C)
        no_mask = pe_module.no_mask_embed.weight.reshape(1, 1, -1)
        keys = torch.add(self._embedding, no_mask.to(dt), out=buf("keys", (1, hw, c), dt))
        # the first keys through the unrolled convolution, in fp32 then rounded once
        e32 = emb if dt == torch.float32 else e.t().float()
        self._base = torch.addmm(self._base_const, e32, self._m0_32).to(dt)[None]  # (1, HW, 4*C1)
        layer = self.transformer.layers[0]
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        h, hq = t2i.num_heads, i2t.num_heads
        d, dq = t2i.internal_dim // h, i2t.internal_dim // hq
        # the projections, made directly in the layouts the attention reads: keys and pixel
        # queries (heads, d, HW), values (heads, HW, d)
        k_t = torch.addmm(self._k_const, t2i.k_proj.weight, emb.t(), out=buf("k_t", (h * d, hw), dt)).view(h, d, hw)
        q_t = torch.addmm(self._q_const, i2t.q_proj.weight, emb.t(), out=buf("q_t", (hq * dq, hw), dt)).view(hq, dq, hw)
        v_rows = torch.addmm(self._v_const, emb, t2i.v_proj.weight.t(), out=buf("v_rows", (hw, h * d), dt))
        v = buf("v", (h, hw, d), dt).copy_(v_rows.view(hw, h, d).transpose(0, 1))
        kpe = torch.add(keys, self._key_pe, out=buf("kpe", (1, hw, c), dt))
        self._shared = (keys, kpe, k_t, v, q_t)
        self._q_proj: Optional[torch.Tensor] = None  # (1, HW, h*d), made from q_t when the plain route needs it

    def _pixel_queries(self) -> torch.Tensor:
        """The first layer's projected pixel queries (1, HW, h*d), as the plain route reads them."""
        if self._q_proj is None:
            q_t = self._shared[4]
            self._q_proj = q_t.permute(2, 0, 1).reshape(1, q_t.shape[2], -1)
        return self._q_proj

    def _mask_matrices(self) -> None:
        """A mask prompt's dense embedding is the 1x1 convolution ``W_d F + b_d`` of the mask
        features ``F`` (r = 16 channels in SAM): the first keys are the shared no-mask keys plus
        ``G U`` with ``G = [F, 1]`` (HW, r + 1) per prompt and ``U = [W_d^T; b_d - no_mask]``.
        Every linear map of them is the shared map plus a rank r + 1 term: here ``U`` through the
        first layer's key, value and query projections and through the unrolled convolution
        (``None`` when the prompt encoder's mask path does not end in such a convolution)."""
        self._mask_u: Optional[Tuple[torch.Tensor, ...]] = None
        pe_module = self.model.prompt_encoder
        last = pe_module.mask_downscaling[-1]
        c = self.decoder.transformer_dim
        if not (isinstance(last, nn.Conv2d) and tuple(last.kernel_size) == (1, 1) and last.bias is not None
                and last.groups == 1 and 4 * (last.in_channels + 1) <= c):
            return
        dt = self.dtype
        u = torch.cat([last.weight[:, :, 0, 0].t().float(),
                       (last.bias.float() - pe_module.no_mask_embed.weight.reshape(-1).float())[None]])  # (r+1, C)
        layer = self.transformer.layers[0]
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        h = t2i.num_heads
        pk = (t2i.k_proj.weight.float() @ u.t()).to(dt)  # (h*d, r+1)
        pv = (t2i.v_proj.weight.float() @ u.t()).to(dt)
        pq = (i2t.q_proj.weight.float() @ u.t()).to(dt)
        um0 = (u @ self._m[0].float()).to(dt)  # (r+1, 4*C1)
        # pq whole (the plain route's pixel queries) and each map split by heads (h, d, r+1)
        self._mask_u = (u.to(dt), pq, _split(pk, h), _split(pv, h), _split(pq, i2t.num_heads), um0)

    def mask_features(self, mask_input: torch.Tensor) -> Optional[torch.Tensor]:
        """``G = [F, 1]`` (B, HW, r + 1) for mask prompts (B, 1, 4h, 4w) (see ``_mask_matrices``),
        or None where the mask path has no such form (then pass the prompt encoder's ``dense``)."""
        self._require_image()
        if self._mask_u is None:
            return None
        f = self.model.prompt_encoder.mask_downscaling[:-1](mask_input)  # (B, r, h, w)
        g = torch.cat([f.flatten(2).transpose(1, 2), f.new_ones(f.shape[0], f.shape[2] * f.shape[3], 1)], dim=2)
        return g.to(self.dtype)

    # ------------------------------------------------------------------ attention forms
    @staticmethod
    def _t2i(
        a: nn.Module, q: torch.Tensor, kpe: torch.Tensor, keys: torch.Tensor,
        shared: Optional[Tuple[torch.Tensor, torch.Tensor]], buf: Buffers,
        low: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Token -> image attention. ``shared``: the batch-independent projected keys (h, d, HW)
        and values (h, HW, d), plus, for mask prompts, ``low``: their per-prompt rank r + 1
        terms (``G`` (B, HW, r+1), key and value maps (h, d, r+1)); else the projections move
        to the tokens (keys (B, HW, C))."""
        h = a.num_heads
        qh = _heads(a.q_proj(q), h)  # (B, N, h, d)
        b, n, _, d = qh.shape
        qh = qh * (1.0 / math.sqrt(d))
        hw, dt = kpe.shape[1], q.dtype
        if shared is not None:  # heads first: one product per head with its shared keys
            k_t, v = shared
            qh = qh.permute(2, 0, 1, 3).reshape(h, b * n, d)
            logits = torch.bmm(qh, k_t, out=buf("logits", (h, b * n, hw), dt))
            if low is not None:  # + (q W_k U^T) G^T per prompt
                g, pk, _ = low
                _add_low_rank(logits, torch.bmm(qh, pk), g, b)
            attn = _softmax(logits, -1, buf("attn", (h, b * n, hw), dt))
            out = torch.bmm(attn, v).view(h, b, n, d)
            if low is not None:  # + (attn G) (W_v U^T)^T per prompt
                g, _, pv = low
                out = out + (attn.view(h, b, n, hw) @ g[None]) @ pv.transpose(1, 2)[:, None]
            out = out.permute(1, 2, 0, 3)  # (B, N, h, d)
        else:
            qk = torch.einsum("bnhd,hdc->bhnc", qh, _split(a.k_proj.weight, h)).reshape(b, h * n, -1)
            logits = torch.bmm(qk, kpe.transpose(1, 2), out=buf("logits", (b, h * n, hw), dt))  # k bias cancels
            attn = _softmax(logits, -1, buf("attn", (b, h * n, hw), dt))
            sk = torch.bmm(attn, keys).view(b, h, n, -1)  # (B, h, N, C); rows of attn sum to 1
            out = torch.einsum("bhnc,hdc->bnhd", sk, _split(a.v_proj.weight, h)) + a.v_proj.bias.view(h, d)
        return a.out_proj(out.flatten(2))

    @staticmethod
    def _i2t(
        a: nn.Module, kpe: torch.Tensor, tk: torch.Tensor, tv: torch.Tensor, q_t: Optional[torch.Tensor],
        attn_out: torch.Tensor, buf: Buffers, low: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Image -> token attention: pixels (B or 1, HW, C) query the tokens. ``q_t``: shared
        projected pixel queries (h, d, HW), or None (then the query projection moves to the
        tokens). Writes the attention weights (B, h*N, HW) to ``attn_out`` (softmax over each
        head's N tokens) and returns the token values with the output projection and its bias
        folded in (B, h*N, C): the update of the keys is ``attn_out^T @ values``."""
        h = a.num_heads
        kh = _heads(a.k_proj(tk), h)  # (B, N, h, d)
        vh = _heads(a.v_proj(tv), h)
        b, n, _, d = kh.shape
        kh = kh * (1.0 / math.sqrt(d))
        hw, dt = kpe.shape[1], tk.dtype
        if q_t is not None:  # heads first: one product per head with its shared queries
            kh_t = kh.permute(2, 0, 1, 3).reshape(h, b * n, d)
            logits = torch.bmm(kh_t, q_t, out=buf("logits", (h, b * n, hw), dt))
            if low is not None:  # + (k W_q U^T) G^T per prompt (mask prompts, see _mask_matrices)
                g, pq = low
                _add_low_rank(logits, torch.bmm(kh_t, pq), g, b)
            logits = logits.view(h, b, n, hw).transpose(0, 1)  # (B, h, N, HW), a view
        else:
            m = torch.einsum("bnhd,hdc->bhnc", kh, _split(a.q_proj.weight, h)).reshape(b, h * n, -1)  # (B, h*N, C)
            c0 = torch.einsum("bnhd,hd->bhn", kh, a.q_proj.bias.view(h, d)).reshape(b, h * n, 1)
            logits = torch.baddbmm(c0, m, kpe.transpose(1, 2), out=buf("logits", (b, h * n, hw), dt)).view(b, h, n, hw)
        _softmax(logits, 2, attn_out.view(b, h, n, hw))  # over each head's N tokens
        vo = torch.einsum("bnhd,ohd->bhno", vh, a.out_proj.weight.view(-1, h, d)).reshape(b, h * n, -1)
        return vo + a.out_proj.bias / h  # each pixel's attention weights sum to h over (head, token)

    # ------------------------------------------------------------------ stages
    def _require_image(self) -> None:
        if self._shared is None:
            raise RuntimeError("FastDecoder.set_image(embedding) must be called before decoding")

    @torch.no_grad()
    def tokens(
        self, sparse: torch.Tensor, dense: Optional[torch.Tensor] = None, mask_index: Optional[Sequence[int]] = None,
        mask_input: Optional[torch.Tensor] = None,
    ) -> TokenState:
        """Run the two-way transformer and the IoU head for B prompts: sparse (B, N, C) prompt
        embeddings; for mask prompts either ``mask_input`` (B, 1, 4h, 4w) logits (preferred:
        the mask's low-rank form is used, see ``_mask_matrices``) or the prompt encoder's
        ``dense`` (B, C, h, w); with neither, the no-mask embedding.
        ``mask_index``: the mask tokens ``masks`` will be asked for (default: all); the final
        attention, whose queries do not interact, runs only for them and the IoU token."""
        self._require_image()
        n_masks = self.decoder.num_mask_tokens
        index = tuple(range(n_masks)) if mask_index is None else tuple(int(i) for i in mask_index)
        if not index or any(not 0 <= i < n_masks for i in index):
            raise ValueError(f"mask_index must name mask tokens in 0..{n_masks - 1}, got {list(index)}")
        dense, feats = self._mask_prompt(sparse, dense, mask_input)
        with self._ws.claim(sparse.device) as buf:
            return self._tokens(sparse, dense, index, buf, scratch=False, feats=feats)

    def _mask_prompt(
        self, sparse: torch.Tensor, dense: Optional[torch.Tensor], mask_input: Optional[torch.Tensor]
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(dense, low-rank mask features) for the transformer from the caller's mask prompt."""
        if mask_input is None:
            return dense, None
        if dense is not None:
            raise ValueError("pass a mask prompt as mask_input or as dense, not both")
        h, w = self._hw
        b = sparse.shape[0]
        if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, 4 * h, 4 * w) or mask_input.shape[0] not in (1, b):
            raise ValueError(f"mask_input must be ({b}, 1, {4 * h}, {4 * w}) low-res logits (one per prompt, or one "
                             f"for all), got {tuple(mask_input.shape)}")
        mask_input = mask_input.expand(b, -1, -1, -1)
        feats = self.mask_features(mask_input)
        if feats is None:
            return self.model.prompt_encoder.mask_downscaling(mask_input), None
        return None, feats

    def _tokens(
        self, sparse: torch.Tensor, dense: Optional[torch.Tensor], index: Tuple[int, ...], buf: Buffers, scratch: bool,
        feats: Optional[torch.Tensor] = None,
    ) -> TokenState:
        """``scratch``: the state's large tensors may live in the workspace (the caller uses the
        state before its next call on this workspace). ``feats``: mask prompts in low-rank form
        (``mask_features``; then ``dense`` is None)."""
        dec, tr, dt = self.decoder, self.transformer, self.dtype
        b = sparse.shape[0]
        _, hw, c = self._embedding.shape
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1), sparse.to(dt)], dim=1)  # (B, T, C)
        key_pe = self._key_pe
        queries, query_pe = tokens, tokens
        shared = dense is None
        low = None
        if feats is not None:  # mask prompts: the shared first layer plus rank r + 1 terms
            u, pq, pk_h, pv_h, pq_h, um0 = self._mask_u
            low = feats  # (B, HW, r+1)
        if shared:
            keys, kpe, k_t, v, q_t = self._shared
            base = self._base
        else:
            keys = self._embedding + dense.flatten(2).transpose(1, 2).to(dt)
            kpe = keys + key_pe
            base = keys @ self._m[0]  # (B, HW, 4*C1)
        n_layers = len(tr.layers)
        t2i0 = tr.layers[0].cross_attn_token_to_image
        # many tokens: project the pixels, as MaskDecoder does (module docstring)
        plain = t2i0.num_heads * tokens.shape[1] > t2i0.internal_dim
        # two buffers for the keys before / after each norm (in turns), one for keys + pe
        k_bufs = [buf(name, (b, hw, c), dt) for name in ("keys0", "keys1")]
        kpe_buf = buf("kpe", (b, hw, c), dt)
        attns, values, rstds = [], [], []
        for i, layer in enumerate(tr.layers):
            first = shared and i == 0
            queries = layer.token_self_attention(queries, query_pe)
            t2i = layer.cross_attn_token_to_image
            if plain and not first:
                attn = _attention(t2i, queries + query_pe, kpe, keys)
            else:
                attn = self._t2i(t2i, queries + query_pe, kpe, keys, (k_t, v) if first else None, buf,
                                 (low, pk_h, pv_h) if first and low is not None else None)
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            i2t = layer.cross_attn_image_to_token
            if plain:
                # shared pixel queries plus the mask prompts' terms, or projected from kpe
                q_proj = None
                if first and low is not None:  # the mask prompts' G (W_q U^T)^T, one product over all pixels of the batch
                    q_proj = (low.reshape(b * hw, -1) @ pq.t()).view(b, hw, -1).add_(self._pixel_queries())
                update = _attention(i2t, kpe, queries + query_pe, queries, q_proj=q_proj)  # (B, HW, C)
                x = torch.add(keys, update, out=k_bufs[1] if keys is k_bufs[0] else k_bufs[0])
            else:
                a = buf(f"a{i}", (b, i2t.num_heads * tokens.shape[1], hw), dt)
                vo = self._i2t(i2t, kpe, queries + query_pe, queries, q_t if first else None, a, buf,
                               (low, pq_h) if first and low is not None else None)
                if any(keys is k for k in k_bufs):  # the keys' update, in place
                    x = keys.baddbmm_(a.transpose(1, 2), vo)
                else:  # the first keys: shared, or the caller's
                    x = torch.baddbmm(keys, a.transpose(1, 2), vo, out=k_bufs[0])
                attns.append(a)
                values.append(vo)
            if first and low is not None:
                x.view(b * hw, c).addmm_(low.reshape(b * hw, -1), u)  # the first keys' G U, one product
            norm = layer.norm4
            keys = k_bufs[1] if x is k_bufs[0] else k_bufs[0]
            rstd = buf(f"rstd{i}", (b, hw, 1), dt)
            torch.ops.aten.native_layer_norm.out(
                x, (c,), norm.weight, norm.bias, norm.eps, out0=keys, out1=buf("mean", (b, hw, 1), dt), out2=rstd
            )
            kpe = torch.add(keys, key_pe, out=kpe_buf)
            rstds.append(rstd)  # the factors below need them (not the plain route)
        finish = [0] + [1 + i for i in index]  # the IoU token and the wanted mask tokens
        queries, query_pe = queries[:, finish], query_pe[:, finish]
        attn = self._t2i(tr.final_attn_token_to_image, queries + query_pe, kpe, keys, None, buf)
        queries = tr.norm_final_attn(queries + attn)
        iou = dec.iou_prediction_head(queries[:, 0, :])
        if plain:  # the convolution of the final keys: factors = [keys^T; 1], right = [W1; bias]
            factors_shape = (b, c + 1, hw)
            factors = buf("factors", factors_shape, dt) if scratch else torch.empty(factors_shape, dtype=dt, device=sparse.device)
            factors[:, :c].copy_(keys.transpose(1, 2))
            factors[:, c] = 1.0
            right = self._w1b[None].expand(b, -1, -1)
            return TokenState(factors, right, None, None, queries[:, 1:, :], iou.float(), index)

        # The first convolution of the final keys (module docstring): with s_l the product of
        # r_l .. r_L, it is s_1 * base + sum_l s_l A_l^T (V_l M_l) + sum_{l<L} s_{l+1} b_l M_{l+1}
        # + (b_L W1 + bias).
        rows = [a.shape[1] for a in attns]
        n_low = 0 if low is None else low.shape[2]
        n_rows = sum(rows) + n_layers + n_low  # mask prompts: + s_1 G^T (U M_1), the first keys' G U
        factors_shape = (b, n_rows, hw)
        factors = buf("factors", factors_shape, dt) if scratch else torch.empty(factors_shape, dtype=dt, device=sparse.device)
        right = torch.empty(b, n_rows, self._m[0].shape[1], dtype=dt, device=sparse.device)
        s = None
        start = sum(rows)
        for i in reversed(range(n_layers)):
            if s is not None:  # row of layer i's norm bias, scaled by s_{i+1}
                factors[:, start + i, :] = s[:, :, 0]
            s = rstds[i] if s is None else s * rstds[i]
            r0 = sum(rows[:i])
            torch.mul(attns[i], s.transpose(1, 2), out=factors[:, r0 : r0 + rows[i]])
            right[:, r0 : r0 + rows[i]] = values[i] @ self._m[i]
        factors[:, start + n_layers - 1, :] = 1.0
        right[:, start : start + n_layers] = self._consts
        if low is not None:
            torch.mul(low.transpose(1, 2), s.transpose(1, 2), out=factors[:, start + n_layers :])
            right[:, start + n_layers :] = um0
        return TokenState(factors, right, s.clone(), base, queries[:, 1:, :], iou.float(), index)

    @torch.no_grad()
    def masks(
        self, state: TokenState, token_index: Optional[Sequence[int]] = None, out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Low-res mask logits (B, K, 4h, 4w) of mask tokens ``token_index`` (default: those
        ``tokens`` finished), written to ``out`` (float32, contiguous) if given."""
        with self._ws.claim(state.device) as buf:
            return self._masks(state, token_index, out, buf)

    def _masks(self, state: TokenState, token_index: Optional[Sequence[int]], out: Optional[torch.Tensor], buf: Buffers) -> torch.Tensor:
        dec, dt = self.decoder, self.dtype
        idx = list(state.mask_index) if token_index is None else [int(i) for i in token_index]
        missing = [i for i in idx if i not in state.mask_index]
        if missing:
            raise ValueError(f"mask tokens {missing} were not finished by tokens(): pass them in its mask_index "
                             f"(this state has {list(state.mask_index)})")
        b, _, hw = state.factors.shape
        h, w = self._hw
        co, c2 = self._co, self._c2
        k = len(idx)
        shape = (b, k, 4 * h, 4 * w)
        if out is None:
            out = torch.empty(shape, dtype=torch.float32, device=state.device)
        elif tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float32 tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
        hyper_t = torch.stack([dec.output_hypernetworks_mlps[i](state.mask_tokens[:, state.mask_index.index(i), :]) for i in idx], dim=1)  # (B, K, C2)
        rows = out.view(b, k, h, 2, 2, 4 * w)  # (i, a, c, (j, b, d))
        ln, half = self._ln, 2 * c2
        z = torch.bmm(state.factors.transpose(1, 2), state.right, out=buf("z", (b, hw, 4 * co), dt))
        if state.scale is not None:
            z.addcmul_(state.scale, state.base)  # convT1 of the final keys, (B, HW, 4*C1)
        # LayerNorm + GELU per (pixel, convT1 offset), written with rows reordered from
        # (i, j, a, b) to (i, a, j, b): then each output row 4i+2a+c is a run of rows here
        x = buf("u", (b, h, 2, w, 2, co), dt)
        torch.ops.aten.native_layer_norm.out(
            z.view(b, h, w, 2, 2, co), (co,), ln.weight, ln.bias, ln.eps, out0=x.permute(0, 1, 3, 2, 4, 5),
            out1=buf("umean", (b, h, w, 2, 2, 1), dt), out2=buf("urstd", (b, h, w, 2, 2, 1), dt),
        )
        x = torch.ops.aten.gelu_(x.view(b * hw * 4, co))
        for c in range(2):  # convT2 offset c: columns (d, o2); rows (i, a, j, b, d) make output row 4i+2a+c
            y = torch.addmm(self._b2s[c], x, self._w2s[c], out=buf("y", (b * hw * 4, half), dt))
            torch.ops.aten.gelu_(y)
            m = torch.bmm(hyper_t, y.view(b, hw * 8, c2).transpose(1, 2), out=buf("m", (b, k, hw * 8), dt))
            rows[:, :, :, :, c].copy_(m.view(b, k, h, 2, 4 * w))
        return out

    def __call__(
        self, sparse: torch.Tensor, dense: Optional[torch.Tensor] = None, multimask_output: bool = True,
        mask_input: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(low-res logits (B, M, 4h, 4w), IoU predictions (B, M)); M = 3 if multimask else 1,
        as ``MaskDecoder.forward``. Mask prompts: ``mask_input`` (B, 1, 4h, 4w) logits, or the
        prompt encoder's ``dense`` (see ``tokens``). Large batches run ``pass_sizes`` prompts at
        a time."""
        self._require_image()
        with torch.no_grad():
            dense, feats = self._mask_prompt(sparse, dense, mask_input)
        sel = list(range(1, self.decoder.num_mask_tokens)) if multimask_output else [0]
        n = sparse.shape[0]
        h, w = self._hw
        logits = torch.empty(n, len(sel), 4 * h, 4 * w, dtype=torch.float32, device=sparse.device)
        ious = torch.empty(n, len(sel), dtype=torch.float32, device=sparse.device)
        per_tokens, per_masks = self.pass_sizes
        with torch.no_grad(), self._ws.claim(sparse.device) as buf:
            for i in range(0, n, per_tokens):
                part_dense = None if dense is None else dense[i : i + per_tokens]
                part_feats = None if feats is None else feats[i : i + per_tokens]
                state = self._tokens(sparse[i : i + per_tokens], part_dense, tuple(sel), buf, scratch=True, feats=part_feats)
                for j in range(0, len(state), per_masks):
                    part = state.select(slice(j, j + per_masks))
                    self._masks(part, sel, logits[i + j : i + j + len(part)], buf)
                ious[i : i + len(state)] = state.iou_pred[:, sel]
        return logits, ious

    @property
    def pass_sizes(self) -> Tuple[int, int]:
        """Prompts per transformer pass and per upscaling pass: twice as many in bfloat16,
        whose tensors are half the size (see TOKENS_PER_PASS)."""
        k = 2 if self.dtype == torch.bfloat16 else 1
        return TOKENS_PER_PASS * k, MASKS_PER_PASS * k
