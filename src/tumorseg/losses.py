"""Losses on logits: BCE, BCE plus soft Dice, and BCE plus soft Tversky (over the batch or per slice)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Tversky weights for false positives and false negatives (Salehi et al. 2017): misses cost more.
TVERSKY_FP, TVERSKY_FN = 0.3, 0.7


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (one score for all pixels; smooth `eps`)."""
    inter = (probs * target).sum()
    return 1 - (2 * inter + eps) / (probs.sum() + target.sum() + eps)


def soft_tversky(
    probs: torch.Tensor, target: torch.Tensor, fp: float = TVERSKY_FP, fn: float = TVERSKY_FN, eps: float = 1.0
) -> torch.Tensor:
    """1 - soft Tversky index TP / (TP + fp*FP + fn*FN) over the whole batch; fp = fn = 0.5 is soft Dice."""
    tp = (probs * target).sum()
    fps = (probs * (1 - target)).sum()
    fns = ((1 - probs) * target).sum()
    return 1 - (tp + eps) / (tp + fp * fps + fn * fns + eps)


def soft_tversky_per_slice(
    probs: torch.Tensor, target: torch.Tensor, fp: float = TVERSKY_FP, fn: float = TVERSKY_FN, eps: float = 1.0
) -> torch.Tensor:
    """Mean of 1 - soft Tversky taken per slice, over the slices with tumor only (0 when none has).

    Over the whole batch, a large tumor's pixels outweigh a small one's; per slice, each tumor
    slice has the same weight in the mean. The smoothing `eps` still makes a tiny miss cheaper:
    missing a 4-pixel tumor costs 0.74, a 144-pixel one 0.99. Empty slices are left to BCE.
    Under DDP each process averages over its own tumor slices, as batch losses do over their batch.
    """
    dims = tuple(range(1, probs.dim()))
    has_tumor = target.sum(dims) > 0
    if not has_tumor.any():
        return probs.sum() * 0.0  # keeps the graph
    p, t = probs[has_tumor], target[has_tumor]
    tp = (p * t).sum(dims)
    fps = (p * (1 - t)).sum(dims)
    fns = ((1 - p) * t).sum(dims)
    return (1 - (tp + eps) / (tp + fp * fps + fn * fns + eps)).mean()


class BCEOverlapLoss(nn.Module):
    """BCE with logits, plus `dice_weight` * an overlap loss (soft Dice, or soft Tversky when `tversky`).

    `per_slice` takes the Tversky loss per tumor slice (`soft_tversky_per_slice`) instead of over the batch.
    """

    def __init__(self, dice_weight: float = 1.0, tversky: bool = False, per_slice: bool = False):
        super().__init__()
        if per_slice and not tversky:
            raise ValueError("per_slice is implemented for the Tversky loss only")
        self.dice_weight = dice_weight
        self.tversky = tversky
        self.per_slice = per_slice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.dice_weight:
            overlap = soft_tversky_per_slice if self.per_slice else soft_tversky if self.tversky else soft_dice
            loss = loss + self.dice_weight * overlap(torch.sigmoid(logits), target)
        return loss


def make_loss(name: str) -> nn.Module:
    """`bce`, `bce+dice`, `bce+tversky` (FP weight 0.3, FN weight 0.7) or `bce+tversky-slice` (per tumor slice)."""
    if name not in ("bce", "bce+dice", "bce+tversky", "bce+tversky-slice"):
        raise ValueError(f"unknown loss {name!r}")
    return BCEOverlapLoss(
        0.0 if name == "bce" else 1.0, tversky=name.startswith("bce+tversky"), per_slice=name == "bce+tversky-slice"
    )


def deep_supervision_loss(
    loss_fn: nn.Module, logits: torch.Tensor, aux: list[torch.Tensor], target: torch.Tensor
) -> torch.Tensor:
    """`loss_fn` on the full-size logits and on each coarser output (1/2, 1/4, ...) against the
    target area-averaged to its size, weighted 1, 1/2, 1/4, ... and normalised to sum to 1 (nnU-Net's weights)."""
    total, weight = loss_fn(logits, target), 1.0
    for k, a in enumerate(aux, start=1):
        factor = target.shape[-1] // a.shape[-1]
        small = F.avg_pool2d(target, factor) if factor > 1 else target
        total = total + 0.5**k * loss_fn(a.float(), small)
        weight += 0.5**k
    return total / weight
