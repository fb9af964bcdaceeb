import pytest
import torch
import torch.nn.functional as F

from tumorseg.config import TrainConfig
from tumorseg.losses import make_loss, soft_dice, soft_tversky


def _masks() -> torch.Tensor:
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1  # 64 tumor pixels per image
    return target


def test_soft_dice_is_zero_when_perfect_and_near_one_when_missed():
    target = _masks()
    assert soft_dice(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice(torch.zeros_like(target), target).item() > 0.98
    assert soft_tversky(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_tversky(torch.zeros_like(target), target).item() > 0.98


def test_tversky_with_equal_weights_is_soft_dice():
    torch.manual_seed(0)
    probs, target = torch.rand(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.6).float()
    # TP / (TP + (FP + FN) / 2) = 2TP / (P + T); the smoothing term scales by 2 too.
    assert soft_tversky(probs, target, 0.5, 0.5, eps=1.0).item() == pytest.approx(
        soft_dice(probs, target, eps=2.0).item(), rel=1e-5
    )


def test_tversky_costs_misses_more_than_false_alarms_and_dice_does_not():
    big = _masks()
    small = torch.zeros_like(big)
    small[:, :, 4:12, 4:8] = 1  # half of `big`
    # small against big: 32 TP and 32 misses per image; big against small: 32 TP and 32 false alarms.
    assert soft_dice(small, big).item() == pytest.approx(soft_dice(big, small).item())
    assert soft_tversky(small, big).item() > 1.5 * soft_tversky(big, small).item()


def test_make_loss_names():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 16, 16), _masks()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert make_loss("bce")(logits, target).item() == pytest.approx(bce.item())
    probs = torch.sigmoid(logits)
    assert make_loss("bce+dice")(logits, target).item() == pytest.approx((bce + soft_dice(probs, target)).item())
    assert make_loss("bce+tversky")(logits, target).item() == pytest.approx((bce + soft_tversky(probs, target)).item())
    assert TrainConfig(loss="bce+tversky").loss == "bce+tversky"
