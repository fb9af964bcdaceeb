"""Losses on logits: BCE, and BCE plus soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (one score for all pixels; smooth `eps`)."""
    inter = (probs * target).sum()
    return 1 - (2 * inter + eps) / (probs.sum() + target.sum() + eps)


class BCEDiceLoss(nn.Module):
    """BCE with logits, plus `dice_weight` * soft Dice when that weight is non-zero."""

    def __init__(self, dice_weight: float = 1.0):
        super().__init__()
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice(torch.sigmoid(logits), target)
        return loss


def make_loss(name: str) -> nn.Module:
    return BCEDiceLoss(1.0 if name == "bce+dice" else 0.0)
