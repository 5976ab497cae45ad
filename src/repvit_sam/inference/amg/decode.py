"""The two ways the automatic mask generator turns a crop's grid points into mask records.

Both take the points of one crop (``(N, 2)`` XY in crop pixels, the crop already embedded in
the predictor) and return :class:`MaskData` parts whose masks passed the same filters, applied by
the one shared :meth:`MaskFilter.apply`; that shared step is what lets the tests prove that the
two paths keep the same masks.

* :class:`ReferenceDecode`: segment_anything's algorithm, ``predict_torch`` per batch of
  ``points_per_batch`` points (full-size logits of all three masks of every point).
* :class:`FastDecode`: :class:`FastDecoder`'s transformer for every point, then upscaling and
  full-size logits only for the masks that pass the predicted-IoU filter, in bounded chunks.

With ``m2m`` (SAM 2's ``use_m2m``) both decode each of a point's three masks once more, prompted
by the point and that mask's own low-res logits (single output), and filter the refined masks
by their refined predicted IoU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from ..fast_decoder import FastDecoder
from ..masks import batched_mask_to_box, calculate_stability_score, masks_to_uncompressed_rle
from ..predictor import SamPredictor
from .utils import MaskData, is_box_near_crop_edge

# Fast path: prompts per pass come from FastDecoder.pass_sizes; full-resolution masks held at once:
FULLRES_CHUNK = 8
FULLRES_PIXELS = 16 * 1024 * 1024  # at most this many full-size logits (64 MB) at once

Advance = Optional[Callable[[int], None]]


@dataclass(frozen=True)
class MaskFilter:
    """The per-mask filters after decoding: predicted IoU (applied by the caller, which sees it
    first), stability score, and masks touching a crop edge that is not an image edge."""

    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_threshold: float

    def iou_keep(self, iou: torch.Tensor) -> torch.Tensor:
        return iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)

    def apply(
        self, logits: torch.Tensor, iou: torch.Tensor, pts: torch.Tensor, keep: torch.Tensor,
        crop_box: Sequence[int], orig_size: Tuple[int, int],
    ) -> MaskData:
        """Full-size logits (N, h, w) of a crop -> records of the masks that pass ``keep``, the
        stability filter and the crop-edge filter, as full-image RLEs."""
        orig_h, orig_w = orig_size
        stability = calculate_stability_score(logits, self.mask_threshold, self.stability_score_offset).cpu()
        if self.stability_score_thresh > 0.0:
            keep = keep & (stability >= self.stability_score_thresh)
        idx = keep.nonzero().flatten()
        masks = logits[idx.to(logits.device)] > self.mask_threshold
        del logits
        boxes = batched_mask_to_box(masks).cpu()
        edge_ok = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        idx, masks, boxes = idx[edge_ok], masks[edge_ok.to(masks.device)], boxes[edge_ok]

        # Uncrop: pad the crop-sized masks into the full image, then keep them as RLE.
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) != (0, 0, orig_w, orig_h):
            full = torch.zeros(masks.shape[0], orig_h, orig_w, dtype=torch.bool, device=masks.device)
            full[:, y0:y1, x0:x1] = masks
            masks = full
        rles = masks_to_uncompressed_rle(masks.cpu())
        return MaskData(
            rles=rles,
            boxes=boxes,
            iou_preds=iou[idx],
            points=pts[idx],
            stability_score=stability[idx],
            crop_boxes=torch.zeros(len(rles), 4, dtype=torch.int64),
        )


class DecodeStrategy(Protocol):
    """Points of one embedded crop in, filtered mask records out."""

    def begin_crop(self) -> None:
        """Called once per crop, after the predictor embedded it."""

    def decode(self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: Sequence[int],
               orig_size: Tuple[int, int], advance: Advance = None) -> List[MaskData]:
        """``points`` (N, 2) XY in crop pixels; ``advance(n)`` reports n points done."""


class ReferenceDecode:
    """segment_anything's decode: one ``predict_torch`` call per batch of points."""

    def __init__(self, predictor: SamPredictor, mask_filter: MaskFilter, points_per_batch: int, m2m: bool = False) -> None:
        self.predictor, self.filter, self.points_per_batch, self.m2m = predictor, mask_filter, points_per_batch, m2m

    def begin_crop(self) -> None:
        pass

    def decode(self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: Sequence[int],
               orig_size: Tuple[int, int], advance: Advance = None) -> List[MaskData]:
        parts = []
        for i in range(0, len(points), self.points_per_batch):
            batch = points[i : i + self.points_per_batch]
            parts.append(self._batch(batch, crop_size, crop_box, orig_size))
            if advance is not None:
                advance(len(batch))
        return parts

    def _batch(self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: Sequence[int], orig_size: Tuple[int, int]) -> MaskData:
        pred = self.predictor
        coords = torch.as_tensor(pred.transform.apply_coords(points, crop_size), dtype=torch.float, device=pred.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=pred.device)
        logits, iou, low = pred.predict_torch(coords[:, None, :], labels[:, None], multimask_output=True, return_logits=True)
        n_out = logits.shape[1]
        logits = logits.flatten(0, 1)  # (B * 3, h, w): the 3 masks of each point in turn
        iou = iou.flatten(0, 1).float().cpu()
        if self.m2m:  # each mask again, prompted by its point and its own low-res logits
            del logits
            c, lab, prompts = coords.repeat_interleave(n_out, 0), labels.repeat_interleave(n_out, 0), low.flatten(0, 1)[:, None]
            parts = [pred.predict_torch(c[j : j + self.points_per_batch, None, :], lab[j : j + self.points_per_batch, None],
                                        mask_input=prompts[j : j + self.points_per_batch], multimask_output=False,
                                        return_logits=True)
                     for j in range(0, len(c), self.points_per_batch)]
            logits = torch.cat([part[0][:, 0] for part in parts])
            iou = torch.cat([part[1][:, 0] for part in parts]).float().cpu()
        pts = torch.as_tensor(np.repeat(points, n_out, axis=0), dtype=torch.float64)
        return self.filter.apply(logits, iou, pts, self.filter.iou_keep(iou), crop_box, orig_size)


class FastDecode:
    """:class:`FastDecoder` decode: the transformer for every point, upscaling only for masks
    that pass the IoU filter. Records come out in the reference's order (by point, then mask).
    ``decode_lock`` is held around each decoder pass (e.g. a server's model lock)."""

    def __init__(self, predictor: SamPredictor, mask_filter: MaskFilter, points_per_batch: int, dtype: torch.dtype,
                 m2m: bool = False) -> None:
        self.predictor, self.filter, self.points_per_batch, self.m2m = predictor, mask_filter, points_per_batch, m2m
        self.decoder = FastDecoder(predictor.model, dtype=dtype)
        self.decode_lock: Any = contextlib.nullcontext()

    def begin_crop(self) -> None:
        self.decoder.set_image(self.predictor.get_image_embedding())

    def decode(self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: Sequence[int],
               orig_size: Tuple[int, int], advance: Advance = None) -> List[MaskData]:
        parts: List[MaskData] = []
        if len(points) == 0:
            return parts
        pred, dec = self.predictor, self.decoder
        assert pred.input_size is not None
        coords = torch.as_tensor(pred.transform.apply_coords(points, crop_size), dtype=torch.float, device=pred.device)
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=pred.device)
        sparse, _ = pred.model.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
        multi_index = list(range(1, dec.decoder.num_mask_tokens))
        h, w = crop_size
        full_chunk = max(1, min(FULLRES_CHUNK, FULLRES_PIXELS // max(1, h * w)))
        token_chunk, mask_chunk = (min(n, self.points_per_batch) for n in dec.pass_sizes)
        candidates = self._refined if self.m2m else self._candidates
        for i in range(0, len(points), token_chunk):
            low_parts, iou_parts, pt_parts = candidates(sparse[i : i + token_chunk], i, multi_index, token_chunk, mask_chunk)
            if low_parts:
                low, ious, pidx = torch.cat(low_parts), torch.cat(iou_parts), torch.cat(pt_parts)
                for k in range(0, len(low), full_chunk):
                    sl = slice(k, k + full_chunk)
                    logits = pred.model.postprocess_masks(low[None, sl], pred.input_size, crop_size)[0]
                    pts = torch.as_tensor(points[pidx[sl].numpy()], dtype=torch.float64)
                    keep = torch.ones(len(logits), dtype=torch.bool)
                    parts.append(self.filter.apply(logits, ious[sl], pts, keep, crop_box, orig_size))
            if advance is not None:
                advance(min(token_chunk, len(points) - i))
        return parts

    def _candidates(self, sparse: torch.Tensor, offset: int, multi: List[int], token_chunk: int,
                    mask_chunk: int) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Low-res logits, predicted IoUs and point indices of the masks of these prompts (point
        ``offset`` on) that pass the IoU filter: the transformer for all, upscaling for those."""
        dec = self.decoder
        with self.decode_lock:
            state = dec.tokens(sparse, mask_index=multi)
        iou = state.iou_pred[:, multi].cpu()  # (b, 3)
        cand = self.filter.iou_keep(iou)
        rows = cand.any(dim=1).nonzero().flatten()
        low_parts, iou_parts, pt_parts = [], [], []
        for j in range(0, len(rows), mask_chunk):
            r = rows[j : j + mask_chunk]
            pick = cand[r]  # (k, 3)
            with self.decode_lock:
                low = dec.masks(state.select(r.to(state.device)), multi)
            low_parts.append(low[pick.to(state.device)])
            iou_parts.append(iou[r][pick])
            pt_parts.append((offset + r)[:, None].expand(-1, len(multi))[pick])
        return low_parts, iou_parts, pt_parts

    def _refined(self, sparse: torch.Tensor, offset: int, multi: List[int], token_chunk: int,
                 mask_chunk: int) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """As :meth:`_candidates` for ``m2m``: every mask of every prompt is upscaled to low-res
        logits, decoded again with them as its mask prompt (single output, mask token 0), and
        the refined masks that pass the IoU filter on their refined IoU are upscaled."""
        dec, n_multi = self.decoder, len(multi)
        with self.decode_lock:
            state = dec.tokens(sparse, mask_index=multi)
            first = torch.cat([dec.masks(state.select(slice(j, j + mask_chunk)), multi) for j in range(0, len(state), mask_chunk)])
        prompts = first.flatten(0, 1)[:, None]  # (b * 3, 1, 4h, 4w): the masks of each prompt in turn
        repeated = sparse.repeat_interleave(n_multi, dim=0)
        low_parts, iou_parts, pt_parts = [], [], []
        for j in range(0, len(repeated), token_chunk):
            with self.decode_lock:
                refined = dec.tokens(repeated[j : j + token_chunk], mask_input=prompts[j : j + token_chunk], mask_index=[0])
            iou = refined.iou_pred[:, 0].cpu()
            rows = self.filter.iou_keep(iou).nonzero().flatten()
            for k in range(0, len(rows), mask_chunk):
                r = rows[k : k + mask_chunk]
                with self.decode_lock:
                    low_parts.append(dec.masks(refined.select(r.to(refined.device)), [0])[:, 0])
                iou_parts.append(iou[r])
                pt_parts.append(offset + (j + r) // n_multi)
        return low_parts, iou_parts, pt_parts
