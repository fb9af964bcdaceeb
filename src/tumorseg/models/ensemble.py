"""Several U-Nets whose tumor probabilities are averaged."""

from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    """Runs each member on the same input and returns the logit of their mean probability,
    so a caller applies sigmoid exactly as to a single U-Net's output."""

    def __init__(self, members: list[nn.Module], eps: float = 1e-6):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a sum, not a stack: int8 export quantizes Concat, and the probabilities stay fp32
        p = sum(torch.sigmoid(m(x)) for m in self.members) / len(self.members)
        p = p.clamp(self.eps, 1 - self.eps)
        return torch.log(p) - torch.log1p(-p)
