"""Track prompted objects through a video with an image SAM.

    vp = VideoPredictor(model, VideoOptions(strategy="points"), backend="openvino")
    prompts = Prompts()
    prompts.add(frame=0, obj_id=1, mask=first_mask)                    # (H, W) bool
    prompts.add(frame=10, obj_id=2, points=[[320, 240]], labels=[1])   # XY pixels
    prompts.add(frame=10, obj_id=3, box=[40, 60, 200, 220])            # XYXY pixels
    for result in vp.propagate("clip.mp4", prompts):                    # or a folder, or arrays
        result.index, result.masks[1], result.scores[1]                # (H, W) bool, predicted IoU

**Frames** are streamed (:mod:`repvit_sam.video.frames`) and each is embedded once per sweep
for all objects, on the predictor's encoder backend. **Sweeps:** backward from the last
prompted frame to frame 0, then forward from the first prompted frame to the end; an object
joins a sweep at its prompted frame. Frame t's mask of an object prompted on frame p comes
from the forward sweep if t >= p, else from the backward one. Frames between the first and
the last prompted frame are in both sweeps: their embeddings are kept from the backward sweep
(up to ``EMBEDDING_CACHE`` of them) so they are not computed twice.

**Strategies** (``VideoOptions.strategy``), per frame, all objects decoded together in one
decoder call per pass:

* ``points`` (SAM-PT): each object carries query points, 8 positive (K-Medoids on its mask)
  and 1 negative (on the inverted mask), moved by the point tracker. Pass 1 prompts with the
  visible positive points; pass 2 adds the visible negatives, the other objects' visible
  positive points (as negatives) and pass 1's low-res logits; then ``refine_iters`` passes
  each add the current mask's box and logits. No visible positive point: an empty mask.
* ``mask``: the previous frame's mask prompts the next: its box, ``mask_points`` K-Medoids
  points and its low-res logits; then the same refinement passes.

Either way a mask whose predicted IoU is below ``iou_threshold`` is empty, and so is a mask
that has drifted onto something else: its prototype (below) must have a cosine similarity of
at least ``verify_threshold`` with the object's; when two objects' masks cover mostly the same
region, it goes to the object whose prototype it resembles more. Refinement boxes
are read from the low-res (256 x 256) logits; only each frame's final masks are upsampled to
the frame size.

**Leaving and re-entering.** An object whose mask came out empty is looked for again on each
later frame (``redetect``): its prototype (the mean of the L2-normalised image embedding under
its prompted mask) is compared with every cell of the frame's embedding; the best cell not
covered by another object, if its cosine similarity reaches ``redetect_threshold``, prompts
the decoder, and the mask is kept if its predicted IoU passes ``iou_threshold`` and its own
prototype is as similar. Query points are then re-initialised from it. They are also
re-initialised every ``reinit_every`` frames, and when fewer than ``reinit_below`` of an
object's positive points are still visible (Lucas-Kanade loses points for good at occlusions).

**Batching.** Objects whose prompts have different numbers of points are decoded in one call
by padding with SAM's own "not a point" token (label -1), which SAM's predictor also appends
to every point prompt without a box.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..inference.fast_decoder import FastDecoder, sparse_embeddings
from ..inference.predictor import SamPredictor
from ..modeling.sam import Sam
from .frames import FrameSource, FramesLike, open_frames
from .appearance import best_cells, overlap_losers, prototypes, unit_cells
from .options import VideoOptions, decoder_dtype
from .prompts import FrameResult, ObjectPrompt, Prompts
from .points import mask_box, mask_medoid, mask_points, query_points
from .trackers import LucasKanadeTracker, PointTracker

EMBEDDING_CACHE = 16  # embeddings of frames shared by both sweeps kept from the backward sweep
DIRECTIONS = ("both", "forward", "backward")


# ---------------------------------------------------------------------------- per-object state
@dataclass
class _Object:
    obj_id: int
    mask: np.ndarray  # (H, W) bool, latest
    low: torch.Tensor  # (1, h4, w4) low-res logits, latest non-empty
    score: float
    proto: Optional[torch.Tensor]  # (C,) unit vector
    points: Optional[np.ndarray] = None  # (N, 2) XY query points (points strategy)
    labels: Optional[np.ndarray] = None  # (N,) 1 / 0
    visible: Optional[np.ndarray] = None  # (N,) bool
    age: int = 0  # frames since the query points were initialised


class VideoPredictor:
    """Image SAM + a point tracker = video object segmentation (see the module docstring).

    model: a :class:`Sam` (fused for speed, e.g. ``SamPredictor.from_pretrained(...).model``);
    options: :class:`VideoOptions`; backend: the image encoder's backend
    (:mod:`repvit_sam.backends`); tracker: a :class:`PointTracker` (default
    :class:`LucasKanadeTracker`), used by the ``points`` strategy.
    """

    def __init__(self, model: Sam, options: Optional[VideoOptions] = None, backend: Optional[str] = None,
                 tracker: Optional[PointTracker] = None) -> None:
        self.model = model
        self.options = options or VideoOptions()
        self.predictor = SamPredictor(model, backend=backend)
        self.tracker = tracker
        self.decoder = FastDecoder(model, dtype=decoder_dtype(self.options.decoder_precision, backend))
        self.transform = self.predictor.transform
        self.frames_encoded = 0  # image-encoder calls, for tests and the benchmark
        self.encode_seconds = 0.0  # wall time of those calls (set_image: resize, normalise, encode)
        self._features: Optional[torch.Tensor] = None
        self._cells: Optional[torch.Tensor] = None  # unit_cells(self._features), computed when first needed
        self._sizes: Optional[Tuple[Tuple[int, int], Tuple[int, int]]] = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ frames
    def _set_frame(self, index: int, frame: np.ndarray, cache: Optional[Dict[int, torch.Tensor]]) -> None:
        features = None if cache is None else cache.get(index)
        if features is None:
            start = time.perf_counter()
            self.predictor.set_image(frame)
            features = self.predictor.get_image_embedding()
            if features.is_cuda:
                torch.cuda.synchronize(features.device)
            self.encode_seconds += time.perf_counter() - start
            self._sizes = (tuple(self.predictor.original_size), tuple(self.predictor.input_size))  # type: ignore[assignment]
            self.frames_encoded += 1
        self._features = features
        self._cells = None
        self.decoder.set_image(features)

    @property
    def original_size(self) -> Tuple[int, int]:
        assert self._sizes is not None
        return self._sizes[0]

    @property
    def input_size(self) -> Tuple[int, int]:
        assert self._sizes is not None
        return self._sizes[1]

    # ------------------------------------------------------------------ decoding
    def _to_input(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) XY original pixels -> the model's input frame."""
        return self.transform.apply_coords(np.asarray(xy, dtype=np.float64), self.original_size)

    @torch.no_grad()
    def _decode(self, points: Sequence[np.ndarray], labels: Sequence[np.ndarray], boxes: Optional[np.ndarray] = None,
                low: Optional[torch.Tensor] = None, multimask: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """B prompts in one decoder call. points[b]: (N_b, 2) XY in the input frame, labels[b]:
        (N_b,); boxes: (B, 4) XYXY input frame; low: (B, 1, h4, w4) logits as mask prompts.
        Returns low-res logits (B, C, h4, w4) and predicted IoU (B, C), C = 3 if multimask."""
        b = len(points)
        n = max((len(p) for p in points), default=0)
        sparse_points = None
        if n > 0:
            coords = np.zeros((b, n, 2), dtype=np.float32)
            labs = -np.ones((b, n), dtype=np.int64)  # -1: SAM's "not a point" padding
            for i, (p, lab) in enumerate(zip(points, labels)):
                coords[i, : len(p)] = p
                labs[i, : len(p)] = lab
            sparse_points = (torch.as_tensor(coords, device=self.device), torch.as_tensor(labs, device=self.device, dtype=torch.int))
        box_t = None if boxes is None else torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.device)
        sparse = sparse_embeddings(self.model.prompt_encoder, sparse_points, box_t, low)
        return self.decoder(sparse, None, multimask, mask_input=low)

    @torch.no_grad()
    def _upscale(self, low: torch.Tensor) -> np.ndarray:
        """(B, 1, h4, w4) logits -> (B, H, W) bool masks at the frame size."""
        if low.shape[0] == 0:
            return np.zeros((0, *self.original_size), dtype=bool)
        full = self.model.postprocess_masks(low, self.input_size, self.original_size)
        return (full[:, 0] > self.model.mask_threshold).cpu().numpy()

    def _low_boxes(self, low: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
        """Boxes (B, 4) XYXY in the input frame of the low-res masks (logits > 0): the first and
        last input pixels the covered low-res cells span; and which masks have >= 2 cells (B,)."""
        m = (low[:, 0] > self.model.mask_threshold).cpu().numpy()  # (B, h4, w4)
        cell = self.model.image_encoder.img_size / m.shape[-1]
        boxes = np.zeros((len(m), 4), dtype=np.float64)
        ok = m.reshape(len(m), -1).sum(1) >= 2
        for i in np.flatnonzero(ok):
            box = mask_box(m[i])
            boxes[i] = box * cell + np.array([0.0, 0.0, cell - 1, cell - 1])  # outer pixels of the end cells
        return boxes, ok

    def _refine(self, low: torch.Tensor, iou: torch.Tensor, points: List[np.ndarray], labels: List[np.ndarray]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``refine_iters`` passes adding each mask's box and logits; an object whose low-res
        mask has fewer than 2 cells stops refining."""
        low, iou = low.clone(), iou.clone()
        for _ in range(self.options.refine_iters):
            boxes, ok = self._low_boxes(low)
            idx = np.flatnonzero(ok)
            if len(idx) == 0:
                break
            sel = torch.as_tensor(idx, device=low.device)
            new_low, new_iou = self._decode([points[i] for i in idx], [labels[i] for i in idx], boxes[idx], low[sel])
            low[sel], iou[sel] = new_low, new_iou
        return low, iou

    # ------------------------------------------------------------------ appearance
    def _prototypes(self, masks: np.ndarray) -> torch.Tensor:
        """(B, C) prototypes of masks on the current frame (:func:`.appearance.prototypes`)."""
        return prototypes(masks, self._features, self.input_size, self.model.image_encoder.img_size, self._unit_cells())

    def _unit_cells(self) -> torch.Tensor:
        """The current frame's unit embedding cells (:func:`.appearance.unit_cells`), computed once."""
        assert self._features is not None
        if self._cells is None:
            self._cells = unit_cells(self._features)
        return self._cells

    # ------------------------------------------------------------------ per frame
    def _start(self, prompts: List[ObjectPrompt]) -> List[_Object]:
        """The states of objects prompted on this frame."""
        opt = self.options
        objs = []
        for p in prompts:
            if p.mask is not None:
                mask, score = p.mask, 1.0
            else:
                pts = np.zeros((0, 2)) if p.points is None else self._to_input(p.points)
                lab = np.zeros((0,), dtype=np.int64) if p.labels is None else p.labels
                box = None if p.box is None else self.transform.apply_boxes(p.box, self.original_size)
                multimask = p.box is None and len(pts) == 1
                low, iou = self._decode([pts], [lab], box, multimask=multimask)
                k = int(iou[0].argmax())
                low, iou = low[:, k : k + 1], iou[:, k : k + 1]
                low, iou = self._refine(low, iou, [pts], [lab]) if opt.refine_iters and p.box is None else (low, iou)
                mask, score = self._upscale(low)[0], float(iou[0, 0])
            objs.append(_Object(p.obj_id, mask, torch.zeros(0), score, None))
        self._initialise([o for o in objs if o.mask.any()], with_logits=True)
        return objs

    def _initialise(self, objs: List[_Object], with_logits: bool = False) -> None:
        """(Re-)initialise objects from their current masks: query points, prototype (first
        time), and low-res logits decoded from their query points and box (``with_logits``)."""
        if not objs:
            return
        opt = self.options
        for o in objs:
            o.points, o.labels = query_points(o.mask, opt.positive_points, opt.negative_points, opt.seed)
            o.visible = np.ones(len(o.points), dtype=bool)
            o.age = 0
        new = [o for o in objs if o.proto is None]
        if new:
            for o, proto in zip(new, self._prototypes(np.stack([o.mask for o in new]))):
                o.proto = proto
        if with_logits:
            boxes = np.stack([self.transform.apply_boxes(mask_box(o.mask), self.original_size)[0] for o in objs])
            low, _ = self._decode([self._to_input(o.points) for o in objs], [o.labels for o in objs], boxes)
            for o, lo in zip(objs, low):
                o.low = lo[:1]

    def _step_points(self, objs: List[_Object]) -> Dict[int, Tuple[np.ndarray, float, torch.Tensor]]:
        """SAM-PT on this frame for objects with tracked points: {id: (mask, score, low)}."""
        opt = self.options
        out: Dict[int, Tuple[np.ndarray, float, torch.Tensor]] = {}
        pos = {o.obj_id: o.points[(o.labels == 1) & o.visible] for o in objs}
        neg = {o.obj_id: o.points[(o.labels == 0) & o.visible] for o in objs}
        active = [o for o in objs if len(pos[o.obj_id])]
        for o in objs:
            if not len(pos[o.obj_id]):
                out[o.obj_id] = (np.zeros(self.original_size, dtype=bool), 0.0, o.low)
        if not active:
            return out
        p1 = [self._to_input(pos[o.obj_id]) for o in active]
        l1 = [np.ones(len(p), dtype=np.int64) for p in p1]
        low, _ = self._decode(p1, l1)
        p2, l2 = [], []
        for o, p in zip(active, p1):
            extra = [neg[o.obj_id]]
            if opt.other_objects_negative:
                extra += [pos[q.obj_id] for q in objs if q.obj_id != o.obj_id]
            negs = self._to_input(np.concatenate(extra)) if extra else np.zeros((0, 2))
            p2.append(np.concatenate([p, negs]))
            l2.append(np.concatenate([np.ones(len(p), dtype=np.int64), np.zeros(len(negs), dtype=np.int64)]))
        low, iou = self._decode(p2, l2, low=low)
        out.update(self._finish(active, *self._refine(low, iou, p2, l2)))
        return out

    def _step_mask(self, objs: List[_Object]) -> Dict[int, Tuple[np.ndarray, float, torch.Tensor]]:
        """Mask propagation on this frame for objects with a previous mask."""
        opt = self.options
        out: Dict[int, Tuple[np.ndarray, float, torch.Tensor]] = {}
        active = [o for o in objs if o.mask.any()]
        for o in objs:
            if not o.mask.any():
                out[o.obj_id] = (o.mask, 0.0, o.low)
        if not active:
            return out
        pick = mask_medoid if opt.mask_points == 1 else lambda m, seed: mask_points(m, opt.mask_points, seed)
        pts = [self._to_input(pick(o.mask, opt.seed)) for o in active]
        labs = [np.ones(len(p), dtype=np.int64) for p in pts]
        boxes = np.stack([self.transform.apply_boxes(mask_box(o.mask), self.original_size)[0] for o in active])
        low, iou = self._decode(pts, labs, boxes, low=torch.stack([o.low for o in active]))
        out.update(self._finish(active, *self._refine(low, iou, pts, labs)))
        return out

    def _finish(self, objs: List[_Object], low: torch.Tensor, iou: torch.Tensor) -> Dict[int, Tuple[np.ndarray, float, torch.Tensor]]:
        """Final masks at the frame size. A mask is empty (score 0; the object keeps its
        previous logits) when its predicted IoU is below ``iou_threshold``, or when its
        prototype's cosine similarity to the object's is below ``verify_threshold`` (it has
        drifted onto something else)."""
        opt = self.options
        masks = self._upscale(low)
        keep = [float(iou[i, 0]) >= opt.iou_threshold and masks[i].any() for i in range(len(objs))]
        check = [i for i, o in enumerate(objs) if keep[i] and o.proto is not None and opt.verify_threshold > -1]
        if check:
            sims = (self._prototypes(masks[check]) * torch.stack([objs[i].proto for i in check])).sum(1)
            for i, sim in zip(check, sims.tolist()):
                keep[i] = sim >= opt.verify_threshold
        out = {}
        for i, o in enumerate(objs):
            if keep[i]:
                out[o.obj_id] = (masks[i], float(iou[i, 0]), low[i])
            else:
                out[o.obj_id] = (np.zeros_like(masks[i]), 0.0, o.low)
        return out

    @torch.no_grad()
    def _redetect(self, lost: List[_Object], taken: np.ndarray) -> Dict[int, Tuple[np.ndarray, float, torch.Tensor]]:
        """Look for objects whose mask is empty by appearance; ``taken`` (H, W) bool: pixels of
        the objects found on this frame. The best free cell of each lost object's prototype,
        if similar enough, prompts the decoder; a mask is kept if its predicted IoU passes and
        its own prototype is as similar. Returns the ones found."""
        opt = self.options
        lost = [o for o in lost if o.proto is not None]
        if not lost:
            return {}
        assert self._features is not None
        best, centres = best_cells(torch.stack([o.proto for o in lost]), self._features, taken, self.input_size,
                                   self.model.image_encoder.img_size, self._unit_cells())
        cand = [i for i in range(len(lost)) if float(best[i]) >= opt.redetect_threshold]
        if not cand:
            return {}
        pts = [centres[i : i + 1] for i in cand]
        labs = [np.ones(1, dtype=np.int64)] * len(cand)
        low, iou = self._decode(pts, labs, multimask=True)
        k = iou.argmax(dim=1)
        sel = torch.arange(len(cand), device=low.device)
        low, iou = low[sel, k][:, None], iou[sel, k][:, None]
        low, iou = self._refine(low, iou, pts, labs)
        masks = self._upscale(low)
        good = [j for j in range(len(cand)) if float(iou[j, 0]) >= opt.iou_threshold and masks[j].any()]
        if not good:
            return {}
        found: Dict[int, Tuple[np.ndarray, float, torch.Tensor]] = {}
        for n, proto in enumerate(self._prototypes(masks[good])):
            j = good[n]
            o = lost[cand[j]]
            if float(proto @ o.proto) >= opt.redetect_threshold:
                found[o.obj_id] = (masks[j], float(iou[j, 0]), low[j])
        return found

    def _resolve_conflicts(self, objs: Dict[int, _Object], results: Dict[int, Tuple[np.ndarray, float, torch.Tensor]]) -> None:
        """Empty the mask of each object that loses a contested region (:func:`.appearance.overlap_losers`)."""
        losers = overlap_losers({k: r[0] for k, r in results.items()},
                                {k: objs[k].proto for k in results if objs[k].proto is not None},
                                lambda region: self._prototypes(region[None])[0])
        for k in losers:
            results[k] = (np.zeros_like(results[k][0]), 0.0, objs[k].low)

    def _track(self, objs: Dict[int, _Object], tracker: Optional[PointTracker], frame: np.ndarray, first: bool
               ) -> Dict[int, Tuple[np.ndarray, float, torch.Tensor]]:
        """Everything a sweep does on the current frame (already set) for the objects it tracks:
        the point tracker's step (not on the sweep's ``first`` frame, which resets it), the
        strategy's decoder passes, overlap resolution and re-detection; updates ``objs`` and
        returns {id: (mask, score, low)}."""
        opt = self.options
        use_points = opt.strategy == "points"
        results: Dict[int, Tuple[np.ndarray, float, torch.Tensor]] = {}
        if tracker is not None:
            if first:
                tracker.reset(frame)
            else:
                for key, (pts, vis) in tracker.step(frame).items():
                    if key in objs:
                        objs[key].points, objs[key].visible = pts, vis
        if not objs:
            return results
        live = [o for o in objs.values() if o.points is not None or not use_points]
        results = self._step_points(live) if use_points else self._step_mask(live)
        for k, o in objs.items():  # objects whose prompt gave an empty mask: nothing to carry
            results.setdefault(k, (np.zeros(self.original_size, dtype=bool), 0.0, o.low))
        if opt.exclusive:
            self._resolve_conflicts(objs, results)
        if opt.redetect:
            empty = [objs[k] for k, (m, _, _) in results.items() if not m.any()]
            if empty:
                taken = np.zeros(self.original_size, dtype=bool)
                for m, _, _ in results.values():
                    taken |= m
                found = self._redetect(empty, taken)
                for k, r in found.items():
                    results[k] = r
                    objs[k].mask = r[0]
                self._initialise([objs[k] for k in found])
                if tracker is not None:
                    for k in found:
                        tracker.set_points(k, objs[k].points)
        for k, (m, s, low) in results.items():
            o = objs[k]
            o.mask, o.score, o.low = m, s, low
            o.age += 1
        return results

    # ------------------------------------------------------------------ sweeps
    def _new_tracker(self) -> PointTracker:
        return self.tracker if self.tracker is not None else LucasKanadeTracker()

    def _sweep(self, src: FrameSource, prompts: List[ObjectPrompt], start: int, stop: int, step: int,
               cache: Optional[Dict[int, torch.Tensor]], keep: Tuple[int, int]) -> Iterator[FrameResult]:
        """One sweep over ``range(start, stop, step)``; objects join at their prompted frame.
        Embeddings of frames in ``keep`` (lo, hi) are stored in ``cache`` (up to EMBEDDING_CACHE)."""
        opt = self.options
        use_points = opt.strategy == "points"
        joining: Dict[int, List[ObjectPrompt]] = {}
        for p in prompts:
            joining.setdefault(p.frame, []).append(p)
        objs: Dict[int, _Object] = {}
        tracker: Optional[PointTracker] = self._new_tracker() if use_points else None
        first = True
        for t, frame in src.frames(start, stop, step):
            self._set_frame(t, frame, cache)
            if cache is not None and keep[0] <= t <= keep[1] and t not in cache and len(cache) < EMBEDDING_CACHE:
                cache[t] = self._features
            results = self._track(objs, tracker, frame, first)
            first = False
            for obj in self._start(joining.get(t, [])):
                objs[obj.obj_id] = obj
                results[obj.obj_id] = (obj.mask, obj.score, obj.low)
                if tracker is not None and obj.points is not None:
                    tracker.set_points(obj.obj_id, obj.points)
            if use_points:
                self._maybe_reinit(objs, tracker)
            shown = {}
            if use_points:
                for k, o in objs.items():
                    if o.points is not None:
                        v = o.visible
                        shown[k] = (o.points[v], o.labels[v])
            yield FrameResult(t, {k: r[0] for k, r in results.items()}, {k: r[1] for k, r in results.items()}, shown)

    def _maybe_reinit(self, objs: Dict[int, _Object], tracker: Optional[PointTracker]) -> None:
        """Re-initialise query points every ``reinit_every`` frames, or when too few are visible."""
        opt = self.options
        due = []
        for o in objs.values():
            if o.points is None or not o.mask.any() or o.age == 0:
                continue
            pos = o.labels == 1
            frac = float(o.visible[pos].mean()) if pos.any() else 0.0
            if (opt.reinit_every > 0 and o.age >= opt.reinit_every) or frac < opt.reinit_below:
                due.append(o)
        self._initialise(due)
        if tracker is not None:
            for o in due:
                tracker.set_points(o.obj_id, o.points)

    def propagate(self, frames: FramesLike, prompts: Prompts, direction: str = "both") -> Iterator[FrameResult]:
        """Yield a :class:`FrameResult` for every frame the sweeps reach (see the module
        docstring). direction: ``both`` (every frame), ``forward`` (from the first prompted
        frame on), ``backward`` (up to the last prompted frame). Frames come in sweep order:
        backward ones first (decreasing index), then forward ones.

        Bad prompts raise :class:`PromptError`, unusable frames :class:`FrameError`, both
        before any frame is encoded where they can be known in advance."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        src = open_frames(frames)
        objects = prompts.validate(len(src), src.size)
        n = len(src)
        lo = min(p.frame for p in objects)
        hi = max(p.frame for p in objects)
        cache: Dict[int, torch.Tensor] = {}
        partial: Dict[int, Tuple[Dict[int, np.ndarray], Dict[int, float]]] = {}
        if direction in ("both", "backward"):
            for r in self._sweep(src, objects, hi, -1, -1, cache if direction == "both" else None, (lo, hi)):
                if direction == "backward" or r.index < lo:
                    yield r
                else:  # frames lo..hi: finished by the forward sweep
                    partial[r.index] = ({k: np.packbits(m) for k, m in r.masks.items()}, dict(r.scores))
        if direction in ("both", "forward"):
            shape = src.size
            for r in self._sweep(src, objects, lo, n, 1, cache, (lo, hi)):
                part = partial.pop(r.index, None)
                if part is not None:
                    for k, packed in part[0].items():
                        if k not in r.masks:
                            r.masks[k] = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
                            r.scores[k] = part[1][k]
                yield r
