"""Automatic mask generation: prompt the model with a grid of points, keep the good masks.

A drop-in for segment_anything's ``SamAutomaticMaskGenerator`` (same constructor parameters
and defaults, same ``generate`` records), written from the published algorithm:

1. crop boxes: the whole image (layer 0), then for layer k >= 1 a 2^k x 2^k grid of
   overlapping crops;
2. for each crop: embed it, decode a point grid (scaled to the crop) with three masks per
   point (a :mod:`~.decode` strategy); with ``use_m2m`` (SAM 2's mask-to-mask refinement)
   decode each of those masks once more, prompted by its point and its own low-res logits,
   and keep the refined mask and its predicted IoU instead; keep masks with predicted IoU > ``pred_iou_thresh`` and
   stability score >= ``stability_score_thresh``, binarise, drop masks touching a crop edge that
   is not an image edge, NMS within the crop (scores = predicted IoU);
3. across crops: NMS preferring smaller crops (scores = 1 / crop area);
4. optionally remove small islands and holes (``min_mask_region_area``) and NMS again.

Binary masks are held as uncompressed RLE between stages and decoded only for the output.
The output ``bbox`` and ``crop_box`` follow the package's box convention
(:mod:`repvit_sam.inference.masks`): ``[x0, y0, x1 - x0, y1 - y0]`` of the inclusive box.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ...modeling.sam import Sam
from ..masks import area_from_rle, batched_mask_to_box, box_xyxy_to_xywh, coco_encode_rle, masks_to_uncompressed_rle, remove_small_regions, uncompressed_rle_to_mask
from ..predictor import SamPredictor
from .decode import DecodeStrategy, FastDecode, MaskFilter, ReferenceDecode
from .options import AmgOptions
from .utils import MaskData, batched_nms, build_point_grid, coverage, generate_crop_boxes, uncrop_boxes_xyxy


class SamAutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts (segment_anything's API).

    The arguments are :class:`AmgOptions`' fields (their docs: ``AmgOptions`` or
    ``repvit-sam everything --help``): segment_anything's positionally; this package's speed
    options (``impl``, ``precision``, ``backend``, ``sampling``, ``coarse_points_per_side``) and
    SAM 2's ``use_m2m`` keyword-only. ``predictor``: the :class:`SamPredictor` that embeds each
    crop (e.g. one that caches embeddings); default a new one on ``backend``.
    ``from_options(model, options)`` builds one from an ``AmgOptions``. In the fast path
    ``points_per_batch`` only caps the prompts per decoder pass.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        impl: str = "fast",
        precision: str = "fp32",
        backend: Optional[str] = None,
        sampling: str = "grid",
        coarse_points_per_side: Optional[int] = None,
        predictor: Optional[SamPredictor] = None,
        use_m2m: bool = False,
    ) -> None:
        opts = AmgOptions(
            points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, stability_score_offset,
            box_nms_thresh, crop_n_layers, crop_nms_thresh, crop_overlap_ratio, crop_n_points_downscale_factor,
            None if point_grids is None else tuple(point_grids), min_mask_region_area, output_mode,
            impl, precision, sampling, coarse_points_per_side, backend, use_m2m,
        ).check()
        self.options = opts
        self.point_grids = opts.grids()
        # bf16 precision also runs the image encoder in bf16 unless a backend is named.
        encoder_backend = "bf16" if opts.precision == "bf16" and opts.backend is None else opts.backend
        if predictor is not None and predictor.model is not model:
            raise ValueError("predictor must wrap the same model as the generator")
        self.predictor = predictor or SamPredictor(model, backend=encoder_backend, fast_decoder=opts.impl == "fast")
        mask_filter = MaskFilter(
            float(pred_iou_thresh), float(stability_score_thresh), float(stability_score_offset), model.mask_threshold
        )
        self.decode: DecodeStrategy
        if opts.impl == "fast":
            dtype = torch.bfloat16 if opts.precision == "bf16" else torch.float32
            self.decode = FastDecode(self.predictor, mask_filter, int(points_per_batch), dtype, m2m=bool(use_m2m))
        else:
            self.decode = ReferenceDecode(self.predictor, mask_filter, int(points_per_batch), m2m=bool(use_m2m))
        self._progress: Optional[Callable[[int, int], None]] = None
        self._points_done = self._points_total = 0

    @classmethod
    def from_options(cls, model: Sam, options: AmgOptions, predictor: Optional[SamPredictor] = None) -> "SamAutomaticMaskGenerator":
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        return cls(model, **values, predictor=predictor)

    def __getattr__(self, name: str) -> Any:  # gen.points_per_side etc., as segment_anything's attributes
        options = self.__dict__.get("options")
        if options is not None and name in AmgOptions.__dataclass_fields__:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def decode_lock(self) -> Any:
        """Held around each fast-path decoder pass (e.g. a server's model lock); no-op by default."""
        return getattr(self.decode, "decode_lock", None)

    @decode_lock.setter
    def decode_lock(self, lock: Any) -> None:
        if isinstance(self.decode, FastDecode):
            self.decode.decode_lock = lock

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(self, image: np.ndarray, progress: Optional[Callable[[int, int], None]] = None) -> List[Dict[str, Any]]:
        """All masks of ``image`` ((H, W, 3) uint8 RGB; other inputs are converted as by
        ``SamPredictor.set_image``). One record per mask:

        segmentation (per output_mode), area (int), bbox ([x, y, w, h] of the mask, the package's
        box convention), predicted_iou (float), point_coords ([[x, y]] prompt in image pixels),
        stability_score (float), crop_box ([x, y, w, h] of the crop the mask came from).

        ``progress(points_done, points_total)``, if given, is called as the grid points of all
        crops are decoded (coarse-to-fine counts the points it skips as done).
        """
        from ...image import to_rgb_uint8

        rgb = to_rgb_uint8(image)
        self._progress = progress
        self._points_done = 0
        try:
            data = self._generate_masks(rgb)
        finally:
            self._progress = None
        opts = self.options
        if opts.min_mask_region_area > 0:
            self._postprocess_small_regions(data, opts.min_mask_region_area, max(opts.box_nms_thresh, opts.crop_nms_thresh))

        records = []
        f = data.fields
        for i, rle in enumerate(f["rles"]):
            if opts.output_mode == "binary_mask":
                seg: Any = uncompressed_rle_to_mask(rle)
            elif opts.output_mode == "uncompressed_rle":
                seg = rle
            else:
                seg = coco_encode_rle(rle)
            records.append(
                {
                    "segmentation": seg,
                    "area": area_from_rle(rle),
                    "bbox": [int(v) for v in box_xyxy_to_xywh(f["boxes"][i].tolist())],
                    "predicted_iou": float(f["iou_preds"][i]),
                    "point_coords": [[float(v) for v in f["points"][i].tolist()]],
                    "stability_score": float(f["stability_score"][i]),
                    "crop_box": [int(v) for v in box_xyxy_to_xywh(f["crop_boxes"][i].tolist())],
                }
            )
        return records

    # ------------------------------------------------------------------ stages
    def _advance(self, n_points: int) -> None:
        if n_points <= 0:
            return
        self._points_done += n_points
        if self._progress is not None:
            self._progress(self._points_done, self._points_total)

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.options.crop_n_layers, self.options.crop_overlap_ratio)
        self._points_total = sum(len(self.point_grids[layer]) for layer in layer_idxs)
        data = MaskData.cat([self._process_crop(image, box, layer, orig_size) for box, layer in zip(crop_boxes, layer_idxs)])
        if len(crop_boxes) > 1 and len(data) > 0:
            cb = data.fields["crop_boxes"].to(torch.float64)
            scores = 1.0 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            keep = batched_nms(data.fields["boxes"], scores, torch.zeros(len(data)), self.options.crop_nms_thresh)
            data.filter(keep)
        return data

    def _process_crop(self, image: np.ndarray, crop_box: List[int], layer: int, orig_size: Tuple[int, int]) -> MaskData:
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, :])
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        self.predictor.set_image(crop)
        self.decode.begin_crop()
        scale = np.array(crop_size, dtype=np.float64)[None, ::-1]
        points = self.point_grids[layer] * scale
        parts = [MaskData.empty()]
        coarse_side = self.options.coarse_side
        if coarse_side is not None:  # a sparse grid first, then the grid points no mask covers
            parts += self.decode.decode(build_point_grid(coarse_side) * scale, crop_size, crop_box, orig_size)
            covered = coverage(MaskData.cat(parts), crop_box)
            px = np.clip(np.floor(points).astype(np.int64), 0, [crop_size[1] - 1, crop_size[0] - 1])
            n_grid = len(points)
            points = points[~covered[px[:, 1], px[:, 0]]]
            self._advance(n_grid - len(points))
        parts += self.decode.decode(points, crop_size, crop_box, orig_size, self._advance)
        self.predictor.reset_image()
        data = MaskData.cat(parts)
        if len(data) == 0:
            return data
        keep = batched_nms(data.fields["boxes"], data.fields["iou_preds"], torch.zeros(len(data)), self.options.box_nms_thresh)
        data.filter(keep)
        data.fields["boxes"] = uncrop_boxes_xyxy(data.fields["boxes"], crop_box)
        data.fields["points"] = data.fields["points"] + torch.as_tensor([x0, y0], dtype=torch.float64)
        data.fields["crop_boxes"] = torch.as_tensor([crop_box] * len(data), dtype=torch.int64).reshape(-1, 4)
        return data

    @staticmethod
    def _postprocess_small_regions(data: MaskData, min_area: float, nms_thresh: float) -> None:
        """Remove small islands and holes from every mask, then NMS preferring unchanged masks
        (score 1 unchanged, 0 changed); changed masks that survive get their new RLE and box."""
        if len(data) == 0:
            return
        new_masks, scores = [], []
        for rle in data.fields["rles"]:
            mask = uncompressed_rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask))
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        masks = torch.stack(new_masks)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(boxes, torch.as_tensor(scores), torch.zeros(len(boxes)), nms_thresh)
        for i in keep.tolist():
            if scores[i] == 0.0:
                data.fields["rles"][i] = masks_to_uncompressed_rle(masks[i : i + 1])[0]
                data.fields["boxes"][i] = boxes[i]
        data.filter(keep)
