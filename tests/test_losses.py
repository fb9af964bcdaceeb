import pytest
import torch
import torch.nn.functional as F

from tumorseg.config import TrainConfig
from tumorseg.losses import BCEOverlapLoss, make_loss, soft_dice, soft_tversky, soft_tversky_per_slice


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


def test_per_slice_tversky_weighs_each_tumor_slice_alike():
    target = torch.zeros(3, 1, 16, 16)
    target[0, :, 2:14, 2:14] = 1  # large tumor, found
    target[1, :, 7:9, 7:9] = 1  # small tumor, missed
    probs = target.clone()
    probs[1] = 0
    # over the batch the small miss is 4 of 148 tumor pixels; per slice it is one of two tumor slices
    assert soft_tversky(probs, target).item() < 0.05
    per_slice = soft_tversky_per_slice(probs, target).item()
    assert per_slice == pytest.approx((0 + (1 - 1 / (0.7 * 4 + 1))) / 2, rel=1e-6)
    # missing the large tumor instead costs about 1 per slice; eps makes the small miss a bit cheaper
    swapped = target.clone()
    swapped[0] = 0
    assert soft_tversky_per_slice(swapped, target).item() == pytest.approx((1 - 1 / (0.7 * 144 + 1)) / 2, rel=1e-6)
    assert per_slice > 0.35 > 10 * soft_tversky(probs, target).item()
    # the empty slice (index 2) adds nothing, even with false alarms on it: BCE handles those
    probs[2, :, :4, :4] = 1
    assert soft_tversky_per_slice(probs, target).item() == pytest.approx(per_slice)


def test_per_slice_tversky_on_a_batch_without_tumor_is_zero_with_a_gradient():
    probs = torch.rand(2, 1, 8, 8, requires_grad=True)
    loss = soft_tversky_per_slice(probs, torch.zeros(2, 1, 8, 8))
    assert loss.item() == 0.0
    loss.backward()
    assert probs.grad is not None


def test_make_loss_per_slice_and_unknown_names():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 16, 16), _masks()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probs = torch.sigmoid(logits)
    expected = bce + soft_tversky_per_slice(probs, target)
    assert make_loss("bce+tversky-slice")(logits, target).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("dice")


def test_per_slice_needs_tversky():
    with pytest.raises(ValueError, match="Tversky"):
        BCEOverlapLoss(tversky=False, per_slice=True)


def test_deep_supervision_loss_weights_coarser_outputs_half_each_level():
    from tumorseg.losses import deep_supervision_loss, make_loss

    torch.manual_seed(0)
    loss_fn = make_loss("bce+tversky")
    y = (torch.rand(2, 1, 16, 16) > 0.7).float()
    main, half, quarter = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)
    assert deep_supervision_loss(loss_fn, main, [], y) == loss_fn(main, y)
    got = deep_supervision_loss(loss_fn, main, [half, quarter], y)
    y2 = y.reshape(2, 1, 8, 2, 8, 2).mean((3, 5))  # the mask area-averaged to each size
    y4 = y.reshape(2, 1, 4, 4, 4, 4).mean((3, 5))
    want = (loss_fn(main, y) + 0.5 * loss_fn(half, y2) + 0.25 * loss_fn(quarter, y4)) / 1.75
    torch.testing.assert_close(got, want)
    # a coarse output that matches its target lowers the loss
    good = torch.logit(y2.clamp(0.01, 0.99))
    assert deep_supervision_loss(loss_fn, main, [good], y) < deep_supervision_loss(loss_fn, main, [-good], y)
