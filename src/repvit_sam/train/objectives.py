"""Training objectives for :func:`~.trainer.fit`: each is an ``nn.Module`` whose
``forward(batch)`` returns ``(loss, stats)`` for one micro-batch.

* :class:`EmbeddingMSE`: decoupled distillation (MobileSAM / RepViT-SAM phase 1): MSE between
  the student encoder's embedding and the stored teacher embedding.
* :class:`PromptLoop`: training with prompts in the loop, shared by ``finetune`` (targets: the
  ground-truth masks; SAM's loss) and ``distill train --phase prompt`` (EdgeSAM's phase 2;
  targets: the teacher decoder's masks for the same prompts; BCE x5 + Dice x5).

The prompt loop, per instance (all in the model-input frame, see :mod:`.prompting`):

1. a first prompt: a box jittered by up to 10% of its side (capped at 20 px), or one point drawn
   uniformly inside the target mask (probability ``box_prob`` for a box);
2. a box is decoded to the single-mask output; a point to the three multimask outputs, of which
   only the best (lowest loss) gets the mask gradient; the IoU head learns every decoded
   output's true IoU (MSE);
3. ``rounds`` correction rounds: one click drawn from the error region of the previous mask
   (missed pixel: positive, extra pixel: negative) is added to the prompts, the previous low-res
   logits are fed back as ``mask_input`` (detached), and the single-mask output is decoded;
   each round's loss is added.

Mask losses are computed at the decoder's output resolution (S/4 x S/4, 256 x 256 for the
1024-pixel models): the target mask on the padded input square is average-pooled 4 x 4 into a
soft target (the fraction of each low-res pixel covered). Correction clicks are drawn from the
low-res error region (prediction logits > 0 vs. target > 0.5) and placed at the centre of the
chosen low-res pixel in input coordinates.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .losses import bce_loss, dice_loss, focal_loss, mask_ious
from .prompting import boxes_from_masks, correction_clicks, jitter_boxes, sample_in

Stats = Dict[str, float]


class EmbeddingMSE(nn.Module):
    """MSE(student(x), teacher embedding). Batch: (x (B, 3, S, S), target (B, C, h, w))."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, Stats]:
        x, target = batch
        dev = next(self.encoder.parameters()).device
        x, target = x.to(dev, non_blocking=True), target.to(dev, non_blocking=True)
        pred = self.encoder(x)
        return F.mse_loss(pred.float(), target.float()), {}


def collate_prompt_batch(items: Sequence[tuple]) -> tuple:
    """DataLoader collate for :class:`PromptLoop`: items are (image (3, S, S), masks (n, S, S),
    scale float[, teacher embedding (C, h, w)])."""
    images = torch.stack([it[0] for it in items])
    masks = [it[1] for it in items]
    scales = torch.tensor([float(it[2]) for it in items])
    teacher = torch.stack([it[3] for it in items]) if len(items[0]) > 3 and items[0][3] is not None else None
    return images, masks, scales, teacher


def sam_mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's mask loss per mask: focal x 20 + dice x 1. (N, H, W) -> (N,)."""
    return 20.0 * focal_loss(logits, target) + dice_loss(logits, target)


def distill_mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """EdgeSAM's prompt-in-the-loop loss per mask: BCE x 5 + Dice x 5. (N, H, W) -> (N,)."""
    return 5.0 * bce_loss(logits, target) + 5.0 * dice_loss(logits, target)


# ``--mask-loss`` names. From random initialisation SAM's focal term (alpha 0.25: positives
# weigh a third of negatives) first drives every pixel to background and leaves it only after
# hundreds of steps; BCE + Dice learns masks from the start (docs/finetune.md has the ablation).
MASK_LOSSES = {"sam": sam_mask_loss, "bce-dice": distill_mask_loss}


class PromptLoop(nn.Module):
    """Prompt-in-the-loop training of a SAM model (see the module doc).

    ``sam``: the model being trained (frozen parts have ``requires_grad=False``; a frozen image
    encoder runs without autograd). ``teacher``: a frozen Sam whose prompt encoder and mask
    decoder turn the batch's teacher embeddings into target masks (distillation), or None (the
    batch's masks are the targets). ``max_instances``: instances drawn per image and micro-batch.
    ``mask_loss``: a :data:`MASK_LOSSES` name; default ``sam`` against ground truth, ``bce-dice``
    against a teacher.
    """

    find_unused_parameters = True  # unchosen multimask outputs get no gradient in some steps

    def __init__(self, sam: nn.Module, rounds: int = 2, box_prob: float = 0.5, max_instances: int = 8,
                 teacher: Optional[nn.Module] = None, mask_loss: Optional[str] = None) -> None:
        super().__init__()
        mask_loss = mask_loss or ("bce-dice" if teacher is not None else "sam")
        if mask_loss not in MASK_LOSSES:
            raise ValueError(f"mask_loss must be one of {', '.join(MASK_LOSSES)}, got {mask_loss!r}")
        self.loss_fn = MASK_LOSSES[mask_loss]
        self.sam = sam
        self.rounds = int(rounds)
        self.box_prob = float(box_prob)
        self.max_instances = int(max_instances)
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
        # on the model's device (CUDA sampling needs a CUDA generator); re-seeded per micro-batch by the trainer
        self.generator = torch.Generator(device=sam.pixel_mean.device)

    def train(self, mode: bool = True) -> "PromptLoop":
        """Frozen parts stay in eval mode (a frozen encoder's batch norm uses its running
        statistics); so does the teacher."""
        super().train(mode)
        for part in (self.sam.image_encoder, self.sam.prompt_encoder, self.sam.mask_decoder):
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # ---------------------------------------------------------------- pieces
    def _decode(self, sam: nn.Module, emb: torch.Tensor, points, boxes, mask_input) -> Tuple[torch.Tensor, torch.Tensor]:
        """All 4 outputs: low-res logits (N, 4, S/4, S/4) and IoU predictions (N, 4)."""
        sparse, dense = sam.prompt_encoder(points, boxes, mask_input)
        return sam.mask_decoder.predict_masks(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense)

    def _decode_mixed(self, sam: nn.Module, emb: torch.Tensor, is_box: torch.Tensor, boxes: torch.Tensor,
                      first_pts: torch.Tensor, clicks: List[Tuple[torch.Tensor, torch.Tensor]],
                      mask_input: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Decode box-first and point-first instances (their sparse prompts have the same
        number of tokens: 2 + clicks) in one decoder call. Rows keep their order."""
        pe = sam.prompt_encoder
        n = emb.shape[0]
        parts_sparse, parts_dense, order = [], [], []
        for want_box in (True, False):
            sel = (is_box == want_box).nonzero()[:, 0]
            if sel.numel() == 0:
                continue
            pts = [c[0][sel, None] for c in clicks]
            labs = [c[1][sel, None] for c in clicks]
            if not want_box:
                pts, labs = [first_pts[sel, None]] + pts, [torch.ones((sel.numel(), 1), dtype=torch.long, device=emb.device)] + labs
            points = (torch.cat(pts, 1), torch.cat(labs, 1)) if pts else None
            mi = mask_input[sel] if mask_input is not None else None
            s, d = pe(points, boxes[sel] if want_box else None, mi)
            parts_sparse.append(s)
            parts_dense.append(d.expand(sel.numel(), -1, -1, -1) if d.shape[0] != sel.numel() else d)
            order.append(sel)
        idx = torch.cat(order)
        inv = torch.empty_like(idx)
        inv[idx] = torch.arange(n, device=idx.device)
        sparse = torch.cat(parts_sparse)[inv]
        dense = torch.cat(parts_dense)[inv]
        return sam.mask_decoder.predict_masks(emb, pe.get_dense_pe(), sparse, dense)

    @staticmethod
    def _low_res_target(masks: torch.Tensor, factor: int) -> torch.Tensor:
        """(N, S, S) bool -> (N, S/f, S/f) float: the covered fraction of each f x f cell."""
        return F.avg_pool2d(masks[:, None].float(), factor)[:, 0]

    def _pick_instances(self, masks: List[torch.Tensor], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Up to ``max_instances`` random instances per image: (image index (N,), masks (N, S, S))."""
        owners, chosen = [], []
        for i, m in enumerate(masks):
            if m.shape[0] == 0:
                continue
            k = min(self.max_instances, m.shape[0])
            sel = torch.randperm(m.shape[0], generator=self.generator, device=self.generator.device)[:k].cpu()
            chosen.append(m[sel])
            owners.append(torch.full((k,), i, dtype=torch.long))
        if not chosen:
            raise ValueError("a micro-batch without any instance mask; the data preparation should have skipped such images")
        return torch.cat(owners).to(device), torch.cat(chosen).to(device)

    # ---------------------------------------------------------------- forward
    def forward(self, batch: tuple) -> Tuple[torch.Tensor, Stats]:
        images, masks, scales, teacher_emb = batch
        sam = self.sam
        dev = sam.pixel_mean.device
        size = int(sam.image_encoder.img_size)
        images = images.to(dev, non_blocking=True)
        encoder_trains = any(p.requires_grad for p in sam.image_encoder.parameters())
        with torch.set_grad_enabled(encoder_trains and torch.is_grad_enabled()):
            emb_all = sam.image_encoder(images)
        owners, gt = self._pick_instances(masks, dev)
        n = owners.numel()
        emb = emb_all[owners]
        scale = scales.to(dev)[owners]
        g = self.generator

        is_box = (torch.rand(n, generator=g, device=g.device) < self.box_prob).to(dev)
        boxes = jitter_boxes(boxes_from_masks(gt), scale, size, g)
        first_pts, _ = sample_in(gt, g)

        factor = 4  # low-res logits are S/4 x S/4
        gt_low = self._low_res_target(gt, factor)
        distill = self.teacher is not None
        if distill:
            t_emb = teacher_emb.to(dev, non_blocking=True)[owners].float()
        # Decoded (instance, output token) pairs of the first round: a box's single output, a
        # point's three multimask outputs; ``slot`` numbers an instance's pairs 0..2.
        box_rows = is_box.nonzero()[:, 0]
        pt_rows = (~is_box).nonzero()[:, 0]
        first = (
            torch.cat([box_rows, pt_rows.repeat_interleave(3)]),
            torch.cat([torch.zeros_like(box_rows), torch.tensor([1, 2, 3], device=dev).repeat(pt_rows.numel())]),
            torch.cat([torch.zeros_like(box_rows), torch.tensor([0, 1, 2], device=dev).repeat(pt_rows.numel())]),
        )
        rows_n = torch.arange(n, device=dev)
        later = (rows_n, torch.zeros_like(rows_n), torch.zeros_like(rows_n))
        clicks: List[Tuple[torch.Tensor, torch.Tensor]] = []
        mask_input = t_mask_input = None
        total = torch.zeros((), device=dev)
        stats: Stats = {}
        loss_fn = self.loss_fn
        for r in range(self.rounds + 1):
            low, iou_pred = self._decode_mixed(sam, emb, is_box, boxes, first_pts, clicks, mask_input)
            pair_row, pair_tok, slot = first if r == 0 else later
            logits = low[pair_row, pair_tok].float()  # (P, S/4, S/4)
            if distill:
                with torch.no_grad():
                    t_low, t_iou = self._decode_mixed(self.teacher, t_emb, is_box, boxes, first_pts, clicks, t_mask_input)
                    target = (t_low[pair_row, pair_tok] > 0).float()
            else:
                target = gt_low[pair_row]
            per_pair = loss_fn(logits, target)  # (P,)
            with torch.no_grad():
                true_iou = mask_ious(logits > 0, target > 0.5)
            iou_err = (iou_pred[pair_row, pair_tok].float() - true_iou) ** 2
            pairs_per = torch.zeros(n, device=dev).index_add_(0, pair_row, torch.ones_like(iou_err))
            table = torch.full((n, 3), float("inf"), device=dev)
            table[pair_row, slot] = per_pair.detach()
            index = torch.zeros((n, 3), dtype=torch.long, device=dev)
            index[pair_row, slot] = torch.arange(pair_row.numel(), device=dev)
            if distill:
                # every output learns the teacher's output of the same token; the teacher's
                # most confident output is carried into the next round
                mask_loss = torch.zeros(n, device=dev).index_add_(0, pair_row, per_pair) / pairs_per
                score = torch.full((n, 3), float("-inf"), device=dev)
                score[pair_row, slot] = t_iou[pair_row, pair_tok].float()
                best = score.argmax(1)
            else:
                best = table.argmin(1)  # only the best of the candidates gets the mask gradient
                mask_loss = per_pair[index[rows_n, best]]
            iou_loss = torch.zeros(n, device=dev).index_add_(0, pair_row, iou_err) / pairs_per
            total = total + (mask_loss + iou_loss).mean()
            chosen = index[rows_n, best]  # pair index of each instance's carried mask
            stats[f"mask_loss_r{r}"] = float(mask_loss.detach().mean())
            stats[f"iou_r{r}"] = float(true_iou[chosen].mean())
            if r == self.rounds:
                break
            mask_input = low[pair_row[chosen], pair_tok[chosen]][:, None].detach()
            if distill:
                t_mask_input = t_low[pair_row[chosen], pair_tok[chosen]][:, None]
            xy, labels = correction_clicks(logits[chosen].detach() > 0, target[chosen] > 0.5, g)
            clicks.append((xy * factor + (factor - 1) / 2, labels))  # low-res pixel centre, input frame
        stats["instances"] = float(n)
        return total / (self.rounds + 1), stats
